// Event stream of one search. The browser's EventSource reconnects by itself and
// sends Last-Event-ID, so the server resumes after the last event seen. When the
// browser gives up (an HTTP error), a new EventSource replays the history and the
// events already handled are skipped by their seq.

export const EVENT_TYPES = [
  "search_started",
  "section_added",
  "batch",
  "epoch_end",
  "pruner_snapshot",
  "deadheaded",
  "checkpoint_written",
  "finished",
  "failed",
];

const RETRY_START_MS = 1000;
const RETRY_MAX_MS = 15000;

/**
 * Open the event stream of a search and return a handle with close().
 *
 * handlers.onEvent(event) gets each engine event once, in seq order.
 * handlers.onState(search) gets the search whenever its state changes.
 * handlers.onStatus(status) gets "open", "reconnecting" or "closed".
 * handlers.beforeRetry() runs before a new EventSource after the browser gave up,
 * for instance to sign in again.
 */
export function openEventStream(searchId, handlers) {
  const url = `/api/searches/${encodeURIComponent(searchId)}/events`;
  let lastSeq = -1;
  let source = null;
  let closed = false;
  let ended = false;
  let retryMs = RETRY_START_MS;
  let retryTimer = null;

  const close = () => {
    closed = true;
    clearTimeout(retryTimer);
    if (source) source.close();
    handlers.onStatus?.("closed");
  };

  const dispatch = (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (error) {
      console.error("Skipped an event that is not JSON", message.data, error);
      return;
    }
    if (typeof event.seq === "number") {
      if (event.seq <= lastSeq) return;
      lastSeq = event.seq;
    }
    handlers.onEvent?.(event);
    if (event.type === "finished" || event.type === "failed") {
      ended = true;
      close();
    }
  };

  const connect = () => {
    source = new EventSource(url);
    source.onopen = () => {
      retryMs = RETRY_START_MS;
      handlers.onStatus?.("open");
    };
    source.onerror = () => {
      if (closed) return;
      if (ended) {
        close();
        return;
      }
      handlers.onStatus?.("reconnecting");
      if (source.readyState === EventSource.CLOSED) {
        retryTimer = setTimeout(async () => {
          if (closed) return;
          try {
            await handlers.beforeRetry?.();
          } catch (error) {
            console.warn("Preparing the stream's reconnection failed", error);
          }
          if (!closed) connect();
        }, retryMs);
        retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
      }
    };
    for (const type of EVENT_TYPES) source.addEventListener(type, dispatch);
    source.addEventListener("state", (message) => {
      const search = JSON.parse(message.data);
      // A search that ends without a finished event (cancelled while queued) ends
      // the stream too, so the next error closes it instead of reconnecting.
      if (["succeeded", "failed", "cancelled"].includes(search.state)) ended = true;
      handlers.onState?.(search);
    });
  };

  connect();
  return { close, get lastSeq() { return lastSeq; } };
}
