/**
 * One distributor invocation runs the turns of its batch side by side (one per
 * object). Their deliveries often go to the same webhook, e.g. one on a parent that
 * many objects name. The outbox merges what the turns publish at about the same
 * time into one delivery per webhook (at most 100 events and 256 KiB each), so a
 * subscriber gets one signed POST instead of one per object, and sluice sends,
 * logs and attempts one delivery instead of many.
 *
 * A turn still waits for its own events to be sent before it commits, so nothing
 * is acknowledged before it is published. The outbox sends as soon as every turn
 * still running is waiting on it, or after `maxWaitMs`, whichever comes first: a
 * batch of one object waits for nothing, and a slow turn holds the others up for
 * at most `maxWaitMs`.
 */
import { mergeDeliveries } from '../core/deliveries.ts';
import type { DeliveryMessage } from '../core/model.ts';

export interface DeliverySink {
  send(messages: readonly DeliveryMessage[]): Promise<void>;
}

interface Waiting {
  readonly messages: readonly DeliveryMessage[];
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

export class DeliveryOutbox implements DeliverySink {
  readonly #sink: DeliverySink;
  readonly #maxWaitMs: number;
  #running = 0;
  #waiting: Waiting[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(sink: DeliverySink, maxWaitMs = 10) {
    this.#sink = sink;
    this.#maxWaitMs = maxWaitMs;
  }

  /** A turn starts: the outbox waits for it before sending. */
  join(): void {
    this.#running += 1;
  }

  /** A turn is over and sends nothing more. */
  leave(): void {
    this.#running -= 1;
    this.#flushIfAllWait();
  }

  /** Resolves when these deliveries (merged with others) are on the queue. */
  send(messages: readonly DeliveryMessage[]): Promise<void> {
    if (messages.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.#waiting.push({ messages, resolve, reject });
      this.#timer ??= setTimeout(() => this.#flush(), this.#maxWaitMs);
      this.#flushIfAllWait();
    });
  }

  #flushIfAllWait(): void {
    // Each turn has at most one send outstanding: when as many wait as run, all wait.
    if (this.#waiting.length > 0 && this.#waiting.length >= this.#running) this.#flush();
  }

  #flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const waiting = this.#waiting;
    this.#waiting = [];
    if (waiting.length === 0) return;
    this.#sink.send(mergeDeliveries(waiting.flatMap((w) => w.messages))).then(
      () => {
        for (const w of waiting) w.resolve();
      },
      (error: unknown) => {
        for (const w of waiting) w.reject(error);
      },
    );
  }
}
