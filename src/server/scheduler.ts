/**
 * Concurrency control of the server. Two levels (the third, batching the requests' forward passes, is batcher.ts):
 *
 * 1. `SlotQueue` — admission. At most `maxActive` requests generate at the same time; the others wait in a
 *    FIFO queue of at most `maxQueue` entries (beyond that a request is refused: HTTP 429). A waiting request
 *    whose client goes away leaves the queue at once; a finished request hands its slot to the oldest waiter.
 *
 * 2. `FifoLock` — execution. The model has one set of scratch buffers and the backend runs one forward pass at
 *    a time, so every backend operation runs under this lock: each batcher step (one `forwardBatch` holding a
 *    token of every active generation and chunks of the prompts being prefilled), and between steps the state
 *    copies, cache inserts and frees of the requests. Waiters are served in arrival order, so a request's state
 *    work waits at most for the step in progress.
 */

/** Thrown by `SlotQueue.acquire` when the queue is full. */
export class QueueFullError extends Error {
  constructor() {
    super('the server is busy: too many requests are queued');
    this.name = 'QueueFullError';
  }
}

/** Thrown by `SlotQueue.acquire` when the signal aborts while waiting, or after `close()`. */
export class AbortedError extends Error {
  constructor(message = 'the request was cancelled') {
    super(message);
    this.name = 'AbortedError';
  }
}

interface Waiter {
  grant: (release: () => void) => void;
  fail: (err: Error) => void;
}

export class SlotQueue {
  private active = 0;
  private readonly waiting: Waiter[] = [];
  private closed = false;

  constructor(readonly maxActive: number, readonly maxQueue: number) {
    if (!(Number.isInteger(maxActive) && maxActive >= 1)) throw new RangeError('maxActive must be an integer ≥ 1');
    if (!(Number.isInteger(maxQueue) && maxQueue >= 0)) throw new RangeError('maxQueue must be an integer ≥ 0');
  }

  get activeCount(): number {
    return this.active;
  }

  get queuedCount(): number {
    return this.waiting.length;
  }

  /**
   * Resolves with a `release` function once the caller may generate (call it exactly once when done; extra calls
   * are ignored). Rejects at once with QueueFullError when no slot is free and the queue is full, or with
   * AbortedError if `signal` aborts while waiting.
   */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (this.closed) return Promise.reject(new AbortedError('the server is shutting down'));
    if (signal?.aborted) return Promise.reject(new AbortedError());
    if (this.active < this.maxActive && this.waiting.length === 0) {
      this.active++;
      return Promise.resolve(this.releaser());
    }
    if (this.waiting.length >= this.maxQueue) return Promise.reject(new QueueFullError());
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const i = this.waiting.indexOf(w);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(new AbortedError());
      };
      const w: Waiter = {
        grant: (release) => { signal?.removeEventListener('abort', onAbort); resolve(release); },
        fail: (err) => { signal?.removeEventListener('abort', onAbort); reject(err); },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(w);
    });
  }

  /** Refuses new requests and fails every waiting one (the active ones finish normally). */
  close(): void {
    this.closed = true;
    for (const w of this.waiting.splice(0)) w.fail(new AbortedError('the server is shutting down'));
  }

  private releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.waiting.shift();
      // The slot passes straight to the oldest waiter (the active count stays the same), else it is freed.
      if (next) next.grant(this.releaser());
      else this.active--;
    };
  }
}

/** A fair (FIFO) asynchronous mutex. */
export class FifoLock {
  private tail: Promise<void> = Promise.resolve();
  private pending = 0;

  /** Number of callers holding or waiting for the lock. */
  get depth(): number {
    return this.pending;
  }

  /** Runs `fn` once every earlier caller has finished; the result (or error) is passed through. */
  run<T>(fn: () => Promise<T> | T): Promise<T> {
    this.pending++;
    const result = this.tail.then(fn);
    // The next caller waits for this one to settle, whether it succeeded or failed.
    this.tail = result.then(
      () => { this.pending--; },
      () => { this.pending--; },
    );
    return result;
  }
}
