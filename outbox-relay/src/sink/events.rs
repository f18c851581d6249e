//! The producer's events (delivery reports, client errors) served on the relay's own runtime,
//! without a polling thread.
//!
//! rdkafka's `ThreadedProducer` runs a thread that waits on librdkafka's main queue and runs the
//! delivery callback there; the callback then woke the relay's runtime through a channel: two
//! thread wake-ups for every batch of reports. Here librdkafka's broker thread wakes the
//! runtime itself (`rd_kafka_queue_cb_event_enable`: a callback when the queue goes from empty
//! to not empty), and a task on the runtime serves the queue, so the callbacks run where the
//! session that reads the reports runs.

use std::ffi::c_void;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use tokio::sync::Notify;

/// How many events one turn of the serving task takes before it lets other tasks run. An event
/// is the delivery reports of a whole produce request, up to `batch.num.messages` each.
const EVENTS_PER_TURN: usize = 64;

/// The wake-up of the serving task, and the task. Dropped before the producer: dropping it
/// turns the wake-up off (no callback runs after that), and stops the task.
pub struct ProducerEvents {
    /// librdkafka's main queue of the producer (a reference of our own, to turn the callback
    /// off; destroyed on drop).
    queue: *mut rdsys::rd_kafka_queue_t,
    /// What the callback wakes; its address is the callback's opaque, kept alive by this
    /// `Arc` (never read) until the callback is turned off.
    _wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

// SAFETY: the queue reference is librdkafka's, whose queue functions are thread-safe; it is
// used only on drop, to turn the callback off and to be destroyed, once.
unsafe impl Send for ProducerEvents {}
// SAFETY: as above; no method reads the handle through a shared reference.
unsafe impl Sync for ProducerEvents {}

impl ProducerEvents {
    /// Starts serving `producer`'s events on the current tokio runtime. An error without one:
    /// nothing would serve the delivery reports.
    pub fn start<C: ProducerContext + 'static>(
        producer: &Arc<BaseProducer<C>>,
    ) -> Result<ProducerEvents, KafkaError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            KafkaError::ClientCreation(
                "the Kafka producer serves its delivery reports on a tokio runtime, and none is \
                 running here"
                    .into(),
            )
        })?;
        let wake = Arc::new(Notify::new());
        // SAFETY: the producer's handle is alive (borrowed); the queue reference returned is
        // ours and destroyed in `drop`.
        let queue = unsafe { rdsys::rd_kafka_queue_get_main(producer.client().native_ptr()) };
        // SAFETY: `wake` outlives the callback (turned off in `drop` before the `Arc` goes).
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(
                queue,
                Some(wake_server),
                Arc::as_ptr(&wake).cast_mut().cast::<c_void>(),
            );
        }
        let task = runtime.spawn(serve(Arc::downgrade(producer), Arc::clone(&wake)));
        Ok(ProducerEvents {
            queue,
            _wake: wake,
            task,
        })
    }
}

/// librdkafka's callback, on one of its threads, under the queue's lock: only a wake-up.
unsafe extern "C" fn wake_server(_rk: *mut rdsys::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Notify` of a live `ProducerEvents` (see `start` and `drop`).
    let wake = unsafe { &*opaque.cast::<Notify>() };
    // Stores a permit when the task is not waiting: no wake-up is lost between its last look
    // at the queue and its next wait.
    wake.notify_one();
}

/// Serves every queued event, then waits for the next wake-up. Ends when the producer is gone.
async fn serve<C: ProducerContext + 'static>(producer: Weak<BaseProducer<C>>, wake: Arc<Notify>) {
    loop {
        let Some(producer) = producer.upgrade() else {
            return;
        };
        let served = serve_queued(&producer);
        // Not held across the wait: the sink's drop destroys the producer where it runs.
        drop(producer);
        if served == EVENTS_PER_TURN {
            tokio::task::yield_now().await;
        } else {
            wake.notified().await;
        }
    }
}

/// Serves the events queued now, up to [`EVENTS_PER_TURN`]; returns how many.
fn serve_queued<C: ProducerContext + 'static>(producer: &BaseProducer<C>) -> usize {
    // SAFETY: the producer's handle is alive (borrowed); the queue reference is ours, for this
    // turn, and destroyed below.
    let queue = unsafe { rdsys::rd_kafka_queue_get_main(producer.client().native_ptr()) };
    let mut served = 0;
    // SAFETY: `queue` is alive until destroyed below.
    while served < EVENTS_PER_TURN && unsafe { rdsys::rd_kafka_queue_length(queue) } > 0 {
        // One event (a batch of delivery reports, or an error) per call; its callbacks run here.
        producer.poll(Duration::ZERO);
        served += 1;
    }
    // SAFETY: our reference, destroyed once.
    unsafe { rdsys::rd_kafka_queue_destroy(queue) };
    served
}

impl Drop for ProducerEvents {
    fn drop(&mut self) {
        // SAFETY: our reference, turned off and destroyed once, while the producer is alive (the
        // sink drops this before its producer). librdkafka calls the callback under the queue's
        // lock and turning it off takes that lock, so none runs after this, and `wake` (the
        // callback's opaque) may go.
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(self.queue, None, std::ptr::null_mut());
            rdsys::rd_kafka_queue_destroy(self.queue);
        }
        self.task.abort();
    }
}
