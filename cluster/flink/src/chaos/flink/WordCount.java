package chaos.flink;

import java.io.BufferedInputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;

import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.serialization.SimpleStringEncoder;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.connector.file.sink.FileSink;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.core.fs.Path;
import org.apache.flink.metrics.Gauge;
import org.apache.flink.runtime.state.FunctionInitializationContext;
import org.apache.flink.runtime.state.FunctionSnapshotContext;
import org.apache.flink.streaming.api.checkpoint.CheckpointedFunction;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.sink.filesystem.OutputFileConfig;
import org.apache.flink.streaming.api.functions.sink.filesystem.bucketassigners.BasePathBucketAssigner;
import org.apache.flink.streaming.api.functions.sink.filesystem.rollingpolicies.OnCheckpointRollingPolicy;
import org.apache.flink.streaming.api.functions.source.legacy.RichParallelSourceFunction;
import org.apache.flink.util.Collector;

/**
 * The word count chaos runs on Flink, line for line the job streamd runs: a partitioned
 * file source, streamd's tokenizer, a keyed running count, and every count update written
 * as {@code word<TAB>count} through a sink whose committed output the oracle checks.
 *
 * <p>Arguments ({@code --key value}): {@code --input} (default /data/input/input.txt),
 * {@code --output} (default /data/output/wordcount/flink), {@code --parallelism} (2),
 * {@code --rate} lines/s over all source subtasks (0 = unlimited), {@code
 * --checkpoint-interval-ms} (1000), {@code --delivery} exactly-once | at-least-once,
 * {@code --job-name} (wordcount). Restart strategy, heartbeats and checkpoint storage come
 * from the cluster's Flink configuration, as for any Flink job.
 */
public final class WordCount {
    private WordCount() {}

    public static void main(String[] args) throws Exception {
        Map<String, String> a = parseArgs(args);
        String input = a.getOrDefault("input", "/data/input/input.txt");
        String output = a.getOrDefault("output", "/data/output/wordcount/flink");
        int parallelism = Integer.parseInt(a.getOrDefault("parallelism", "2"));
        long rate = Long.parseLong(a.getOrDefault("rate", "0"));
        long interval = Long.parseLong(a.getOrDefault("checkpoint-interval-ms", "1000"));
        String delivery = a.getOrDefault("delivery", "exactly-once");
        String jobName = a.getOrDefault("job-name", "wordcount");
        boolean exactlyOnce;
        switch (delivery) {
            case "exactly-once": exactlyOnce = true; break;
            case "at-least-once": exactlyOnce = false; break;
            default: throw new IllegalArgumentException("--delivery must be exactly-once or at-least-once, got " + delivery);
        }

        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(parallelism);
        // AT_LEAST_ONCE checkpoints skip barrier alignment: records past a barrier may be
        // in the snapshot's state yet replayed after a restore (the control's point).
        env.enableCheckpointing(interval,
                exactlyOnce ? CheckpointingMode.EXACTLY_ONCE : CheckpointingMode.AT_LEAST_ONCE);

        DataStream<String> updates = env
                .addSource(new LineSource(input, rate), "lines", Types.STRING)
                .uid("lines")
                .flatMap(new Tokenize()).uid("tokenize").name("tokenize")
                .keyBy(w -> w, Types.STRING)
                .process(new Count()).uid("count").name("count");

        if (exactlyOnce) {
            // Two-phase commit through the checkpoint: part files roll on every checkpoint
            // and are renamed to their final (visible) name only once it completes, so a
            // restore never exposes an update that is replayed.
            FileSink<String> sink = FileSink
                    .forRowFormat(new Path(output), new SimpleStringEncoder<String>("UTF-8"))
                    .withBucketAssigner(new BasePathBucketAssigner<>())
                    .withRollingPolicy(OnCheckpointRollingPolicy.build())
                    .withOutputFileConfig(OutputFileConfig.builder()
                            .withPartPrefix("part").withPartSuffix(".tsv").build())
                    .build();
            updates.sinkTo(sink).uid("sink").name("file-sink");
        } else {
            updates.sinkTo(new DirectSink(output)).uid("sink").name("direct-sink");
        }
        env.execute(jobName);
    }

    private static Map<String, String> parseArgs(String[] args) {
        Map<String, String> m = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            if (!args[i].startsWith("--") || i + 1 >= args.length) {
                throw new IllegalArgumentException("expected --key value pairs, got " + String.join(" ", args));
            }
            m.put(args[i].substring(2), args[++i]);
        }
        return m;
    }

    /**
     * Unicode White_Space, the property Rust's {@code char::is_whitespace} tests and
     * streamd's tokenizer splits on. Not {@link Character#isWhitespace}: that one excludes
     * the no-break spaces (U+00A0, U+2007, U+202F) and U+0085, and includes U+001C..U+001F.
     * Every White_Space code point is in the BMP, so testing UTF-16 units is exact
     * (surrogates are never whitespace).
     */
    static boolean isWhiteSpace(char c) {
        if (c <= 0x20) {
            return c == 0x20 || (c >= 0x09 && c <= 0x0D);
        }
        if (c < 0x85) {
            return false;
        }
        return c == 0x85 || c == 0xA0 || c == 0x1680
                || (c >= 0x2000 && c <= 0x200A)
                || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
    }

    /** streamd's tokenizer: maximal runs of non-White_Space, case and punctuation kept. */
    static final class Tokenize implements FlatMapFunction<String, String> {
        @Override
        public void flatMap(String line, Collector<String> out) {
            int start = -1;
            for (int i = 0; i < line.length(); i++) {
                boolean ws = isWhiteSpace(line.charAt(i));
                if (ws && start >= 0) {
                    out.collect(line.substring(start, i));
                    start = -1;
                } else if (!ws && start < 0) {
                    start = i;
                }
            }
            if (start >= 0) {
                out.collect(line.substring(start));
            }
        }
    }

    /** The running count in keyed state; every new value goes out as an update. */
    static final class Count extends KeyedProcessFunction<String, String, String> {
        private transient ValueState<Long> count;

        @Override
        public void open(OpenContext ctx) {
            count = getRuntimeContext().getState(new ValueStateDescriptor<>("count", Types.LONG));
        }

        @Override
        public void processElement(String word, Context ctx, Collector<String> out) throws Exception {
            Long c = count.value();
            long next = (c == null ? 0 : c) + 1;
            count.update(next);
            out.collect(word + "\t" + next);
        }
    }

    /**
     * Reads the lines of a text file that this subtask owns (index % p == subtask), as
     * streamd's PartitionReader does, at {@code rate / p} lines/s. The position (next line
     * index, its byte offset) is checkpointed, so a restore replays exactly the lines after
     * the snapshot. Lines are split on '\n' with one trailing '\r' dropped; a last line
     * without '\n' still counts; bytes are decoded as UTF-8 with replacement characters.
     */
    static final class LineSource extends RichParallelSourceFunction<String> implements CheckpointedFunction {
        private final String path;
        private final long rate;
        private volatile boolean running = true;
        // Guarded by the checkpoint lock: read by snapshotState, written by run. Volatile
        // for the linesRead gauge, which the metric reporter reads without the lock.
        private volatile long nextLine;
        private long byteOffset;
        private transient ListState<String> positions;

        LineSource(String path, long rate) {
            this.path = path;
            this.rate = rate;
        }

        @Override
        public void initializeState(FunctionInitializationContext ctx) throws Exception {
            // Union state, each entry tagged with its subtask: every subtask sees all
            // entries on restore and picks its own, whatever Flink's redistribution does.
            positions = ctx.getOperatorStateStore().getUnionListState(
                    new ListStateDescriptor<>("positions", Types.STRING));
            int me = getRuntimeContext().getTaskInfo().getIndexOfThisSubtask();
            if (ctx.isRestored()) {
                for (String entry : positions.get()) {
                    String[] f = entry.split(":");
                    if (Integer.parseInt(f[0]) == me) {
                        nextLine = Long.parseLong(f[1]);
                        byteOffset = Long.parseLong(f[2]);
                    }
                }
            }
        }

        /**
         * The gauge {@code linesRead}: the lines of the input this subtask owns that lie
         * before its position (absolute, so a restore moves it back). Summed over the
         * subtasks it is the input position chaos compares before and after a fault.
         */
        @Override
        public void open(OpenContext ctx) throws Exception {
            int me = getRuntimeContext().getTaskInfo().getIndexOfThisSubtask();
            int p = getRuntimeContext().getTaskInfo().getNumberOfParallelSubtasks();
            getRuntimeContext().getMetricGroup().gauge("linesRead", (Gauge<Long>) () -> {
                long n = nextLine;
                return n > me ? (n - me + p - 1) / p : 0L;
            });
        }

        @Override
        public void snapshotState(FunctionSnapshotContext ctx) throws Exception {
            positions.clear();
            int me = getRuntimeContext().getTaskInfo().getIndexOfThisSubtask();
            positions.add(me + ":" + nextLine + ":" + byteOffset);
        }

        @Override
        public void run(SourceContext<String> ctx) throws Exception {
            int me = getRuntimeContext().getTaskInfo().getIndexOfThisSubtask();
            int p = getRuntimeContext().getTaskInfo().getNumberOfParallelSubtasks();
            double perSubtask = rate > 0 ? (double) rate / p : 0;
            long started = System.nanoTime();
            long emitted = 0;
            byte[] buf = new byte[256];
            try (FileInputStream file = new FileInputStream(new File(path))) {
                file.getChannel().position(byteOffset);
                InputStream in = new BufferedInputStream(file, 256 * 1024);
                while (running) {
                    int len = 0;
                    int b;
                    boolean newline = false;
                    while ((b = in.read()) >= 0) {
                        if (b == '\n') {
                            newline = true;
                            break;
                        }
                        if (len == buf.length) {
                            buf = java.util.Arrays.copyOf(buf, len * 2);
                        }
                        buf[len++] = (byte) b;
                    }
                    if (len == 0 && !newline) {
                        return; // end of input: the task finishes, then the final checkpoint
                    }
                    long consumed = len + (newline ? 1 : 0);
                    boolean mine = nextLine % p == me;
                    String text = null;
                    if (mine) {
                        int end = (len > 0 && buf[len - 1] == '\r') ? len - 1 : len;
                        text = new String(buf, 0, end, StandardCharsets.UTF_8);
                    }
                    // Emitting and advancing the position are one step for a snapshot.
                    synchronized (ctx.getCheckpointLock()) {
                        if (mine) {
                            ctx.collect(text);
                        }
                        nextLine++;
                        byteOffset += consumed;
                    }
                    if (mine && perSubtask > 0) {
                        emitted++;
                        long due = started + (long) (emitted * 1e9 / perSubtask);
                        long wait = due - System.nanoTime();
                        if (wait > 0) {
                            Thread.sleep(wait / 1_000_000, (int) (wait % 1_000_000));
                        }
                    }
                }
            }
        }

        @Override
        public void cancel() {
            running = false;
        }
    }

    /**
     * The at-least-once negative control: no two-phase commit. Each update is written and
     * flushed to the OS straight away into a file that is visible (committed) at once, so
     * the updates a restore replays appear twice.
     */
    static final class DirectSink implements Sink<String> {
        private final String dir;

        DirectSink(String dir) {
            this.dir = dir;
        }

        @Override
        public SinkWriter<String> createWriter(WriterInitContext ctx) throws IOException {
            new File(dir).mkdirs();
            // One file per subtask attempt: a restarted attempt never appends to a file a
            // dead one may have left with a torn last line.
            String name = String.format("direct-%d-%d-%d.tsv",
                    ctx.getTaskInfo().getIndexOfThisSubtask(),
                    ctx.getTaskInfo().getAttemptNumber(),
                    System.currentTimeMillis());
            FileOutputStream out = new FileOutputStream(new File(dir, name));
            return new SinkWriter<String>() {
                @Override
                public void write(String element, Context context) throws IOException {
                    out.write((element + "\n").getBytes(StandardCharsets.UTF_8));
                }

                @Override
                public void flush(boolean endOfInput) throws IOException {
                    out.flush();
                }

                @Override
                public void close() throws IOException {
                    out.close();
                }
            };
        }
    }
}
