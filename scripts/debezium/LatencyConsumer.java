// Consumer side of the P2 latency test of scripts/bench-debezium --latency. Run with Java's
// source launcher on the broker's jars (nothing to build):
//   java -cp "$KAFKA_LIBS/*" scripts/debezium/LatencyConsumer.java BROKERS TOPIC EXPECTED OUT IDLE_S
// Reads TOPIC from the beginning of every partition (assign, no consumer group) and writes one
// line "seq recv_us" per message to OUT, where seq is the payload's "seq" field and recv_us the
// wall clock (microseconds since the epoch, the clock PostgreSQL's clock_timestamp() reads) at
// the moment poll() returned the message. Stops after EXPECTED messages, or IDLE_S seconds
// without any message once the first one arrived (or 120 s before the first).
import java.io.BufferedWriter;
import java.io.FileWriter;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

public class LatencyConsumer {
  public static void main(String[] args) throws Exception {
    String brokers = args[0], topic = args[1], out = args[3];
    long expected = Long.parseLong(args[2]);
    long idleMs = Long.parseLong(args[4]) * 1000L;
    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
    p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    p.put(ConsumerConfig.FETCH_MIN_BYTES_CONFIG, "1");
    p.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "100");
    Pattern seqRe = Pattern.compile("\"seq\": ?(\\d+)");
    try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p);
        BufferedWriter w = new BufferedWriter(new FileWriter(out))) {
      List<TopicPartition> parts = new ArrayList<>();
      long deadline = System.currentTimeMillis() + 60_000;
      while (parts.isEmpty()) {
        List<PartitionInfo> infos = c.partitionsFor(topic, Duration.ofSeconds(5));
        if (infos != null) for (PartitionInfo i : infos) parts.add(new TopicPartition(topic, i.partition()));
        if (parts.isEmpty()) {
          if (System.currentTimeMillis() > deadline) throw new IllegalStateException("no topic " + topic);
          Thread.sleep(200);
        }
      }
      c.assign(parts);
      c.seekToBeginning(parts);
      System.out.println("CONSUMING " + parts.size() + " partitions");
      System.out.flush();
      long n = 0, last = System.currentTimeMillis();
      boolean any = false;
      while (n < expected) {
        ConsumerRecords<String, String> recs = c.poll(Duration.ofMillis(50));
        long nowUs = toMicros(Instant.now());
        if (recs.isEmpty()) {
          long limit = any ? idleMs : 120_000;
          if (System.currentTimeMillis() - last > limit) break;
          continue;
        }
        any = true;
        last = System.currentTimeMillis();
        for (ConsumerRecord<String, String> r : recs) {
          Matcher m = seqRe.matcher(r.value() == null ? "" : r.value());
          if (m.find()) {
            w.write(m.group(1));
            w.write(' ');
            w.write(Long.toString(nowUs));
            w.newLine();
            n++;
          }
        }
      }
      System.out.println("RECEIVED " + n);
    }
  }

  static long toMicros(Instant t) {
    return t.getEpochSecond() * 1_000_000L + t.getNano() / 1_000;
  }
}
