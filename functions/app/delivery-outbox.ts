/**
 * One distributor invocation runs the turns of its batch side by side (one per
 * object). Their deliveries often go to the same webhook, e.g. one on a parent that
 * many objects name. The outbox merges what the turns publish at about the same
 * time into one delivery per webhook (at most 100 events and 256 KiB each), so a
 * subscriber gets one signed POST instead of one per object, and sluice sends,
 * logs and attempts one delivery instead of many.
 *
 * A turn still waits for its own events to be sent before it commits, so nothing
 * is acknowledged before it is published. Deliveries merge only within a tenant (a
 * webhook belongs to one), so the outbox waits only for the turns of the same
 * tenant: it sends a tenant's deliveries as soon as every turn of that tenant still
 * running is waiting on it, or after `maxWaitMs`, whichever comes first. A batch of
 * one object waits for nothing, a slow turn holds its own tenant's other turns up
 * for at most `maxWaitMs`, and another tenant's turns not at all.
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

/** The turns of one tenant in the batch, and the deliveries they wait to send. */
interface TenantTurns {
  running: number;
  waiting: Waiting[];
  timer: ReturnType<typeof setTimeout> | undefined;
}

export class DeliveryOutbox implements DeliverySink {
  readonly #sink: DeliverySink;
  readonly #maxWaitMs: number;
  readonly #tenants = new Map<string, TenantTurns>();

  constructor(sink: DeliverySink, maxWaitMs = 10) {
    this.#sink = sink;
    this.#maxWaitMs = maxWaitMs;
  }

  #turns(tenantId: string): TenantTurns {
    let turns = this.#tenants.get(tenantId);
    if (!turns) {
      turns = { running: 0, waiting: [], timer: undefined };
      this.#tenants.set(tenantId, turns);
    }
    return turns;
  }

  /** A turn of this tenant starts: the tenant's deliveries wait for it before they are sent. */
  join(tenantId: string): void {
    this.#turns(tenantId).running += 1;
  }

  /** A turn of this tenant is over and sends nothing more. */
  leave(tenantId: string): void {
    const turns = this.#turns(tenantId);
    turns.running -= 1;
    this.#flushIfAllWait(turns);
    if (turns.running === 0 && turns.waiting.length === 0) this.#tenants.delete(tenantId);
  }

  /** Resolves when these deliveries (one turn's, so one tenant's; merged with others) are on the queue. */
  send(messages: readonly DeliveryMessage[]): Promise<void> {
    const first = messages[0];
    if (!first) return Promise.resolve();
    const turns = this.#turns(first.tenantId);
    return new Promise<void>((resolve, reject) => {
      turns.waiting.push({ messages, resolve, reject });
      turns.timer ??= setTimeout(() => this.#flush(turns), this.#maxWaitMs);
      this.#flushIfAllWait(turns);
    });
  }

  #flushIfAllWait(turns: TenantTurns): void {
    // Each turn has at most one send outstanding: when as many wait as run, all wait.
    if (turns.waiting.length > 0 && turns.waiting.length >= turns.running) this.#flush(turns);
  }

  #flush(turns: TenantTurns): void {
    clearTimeout(turns.timer);
    turns.timer = undefined;
    const waiting = turns.waiting;
    turns.waiting = [];
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
