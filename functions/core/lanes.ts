/**
 * The doorbell's two lanes. Every object with new events rings once on the FIFO
 * "distribute" queue, and a FIFO queue hands its groups out about in the order they
 * arrived: a tenant writing thousands of distinct objects a second (each within its
 * per-object limits, its requests within its usage plan) would put a doorbell per
 * object ahead of every other tenant's, and the distributors, however fast, would
 * reach the others' only after all of them. So a container sends a tenant's rings
 * to a second FIFO queue, the bulk lane (its own distributors, its own alarm), once
 * that tenant has rung more than `ringsPerSecond` objects in one second here, and
 * keeps it there until BULK_HOLD_MS pass without that happening again. Per container
 * and per second: no shared state, no extra call; a tenant spread thinly over many
 * containers stays in the main lane, where its rings are few.
 *
 * A lane changes only where a doorbell is waiting, never the object's order: the
 * lease (a conditional write) admits one turn at a time whichever lane rang.
 */

export type Lane = 'main' | 'bulk';

/** How long a tenant's rings stay in the bulk lane after its last second over the limit. */
export const BULK_HOLD_MS = 10_000;

/** Tenants remembered at once; forgotten all together when a new one finds it full. */
const MEMORY = 10_000;

interface TenantRings {
  /** The second (epoch ms ÷ 1,000, floored) `rings` counts. */
  second: number;
  rings: number;
  bulkUntil: number;
}

export class DoorbellLanes {
  readonly #tenants = new Map<string, TenantRings>();
  readonly #ringsPerSecond: number;
  readonly #now: () => number;

  constructor(options: { ringsPerSecond: number; now: () => number }) {
    this.#ringsPerSecond = options.ringsPerSecond;
    this.#now = options.now;
  }

  /**
   * The lane for one ring of `tenantId`'s, counted. `entered` is true for the ring
   * that moved the tenant from the main lane to the bulk lane (for a log line).
   */
  laneFor(tenantId: string): { lane: Lane; entered: boolean } {
    const now = this.#now();
    const second = Math.floor(now / 1_000);
    let rings = this.#tenants.get(tenantId);
    if (!rings) {
      if (this.#tenants.size >= MEMORY) this.#tenants.clear();
      rings = { second, rings: 0, bulkUntil: Number.NEGATIVE_INFINITY };
      this.#tenants.set(tenantId, rings);
    }
    if (rings.second !== second) {
      rings.second = second;
      rings.rings = 0;
    }
    rings.rings++;
    const wasBulk = now < rings.bulkUntil;
    if (rings.rings > this.#ringsPerSecond) rings.bulkUntil = now + BULK_HOLD_MS;
    const bulk = now < rings.bulkUntil;
    return { lane: bulk ? 'bulk' : 'main', entered: bulk && !wasBulk };
  }
}
