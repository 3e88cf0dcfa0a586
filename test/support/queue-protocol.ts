/**
 * What the queue protocol's properties (queue-protocol and queue-crash-points) share: the
 * deps their ingest, turns and reconciler runs are given, and what they check of one
 * object's distributed events in the order they went out (a republished chunk repeats
 * an event with its seq, never gives that seq to another event, and never reorders).
 */
import { expect } from 'vitest';
import type { IdempotencyStore } from '../../functions/adapters/idempotency-store.ts';
import type { QueueStore } from '../../functions/adapters/queue-store.ts';
import type { SluiceConfig } from '../../functions/core/config.ts';
import type { ObjectKey } from '../../functions/core/model.ts';
import type { Switch } from '../../functions/core/switches.ts';
import { NO_LOGS, NO_METRICS } from '../../functions/core/telemetry.ts';

/** The objects a property writes, and its settings: a small cap, turns and leases, short enough to reach in a run. */
export const PROTOCOL_OBJECTS = ['a:1', 'b:2'];
export const PROTOCOL_SETTINGS = {
  objectQueueCap: 12,
  objectRatePerSecond: 100_000,
  objectBurst: 100_000,
  turnMaxEvents: 5,
  leaseMs: 5_000,
  turnMaxMs: 1_000,
  stuckAfterMs: 6_000,
  ingestGraceMs: 2_000,
} as const;

/**
 * The clock of one run of a property, and the deps its ingest, turns and reconciler runs
 * share: its stores and simulated doorbell, that clock (a turn's sleep moves it on), event
 * ids of the run's own, no metrics or logs.
 */
export function protocolDeps<D>(parts: {
  readonly store: QueueStore;
  readonly idempotency: IdempotencyStore;
  readonly config: SluiceConfig;
  readonly doorbell: D;
  readonly run: number;
  readonly switches: () => Promise<Switch[]>;
}) {
  let clock = Date.now();
  let ids = 0;
  const now = () => clock;
  const advance = (ms: number) => {
    clock += ms;
  };
  const common = { doorbell: parts.doorbell, config: parts.config, metrics: NO_METRICS, logger: NO_LOGS, now };
  return {
    now,
    advance,
    turn: { ...common, sleep: async (ms: number) => advance(ms) },
    ingest: { ...common, queues: parts.store, idempotency: parts.idempotency, newEventId: () => `evt_${parts.run}_${++ids}` },
    reconciler: { ...common, queues: parts.store, switches: { list: parts.switches } },
  };
}

interface Distributed {
  readonly id: string;
  readonly seq: number;
}

/** Each seq names one event (the one it went out with first); answers the event of each seq. */
export function expectOneEventPerSeq(ofObject: readonly Distributed[], label = ''): Map<number, string> {
  const bySeq = new Map<number, string>();
  for (const e of ofObject) {
    const other = bySeq.get(e.seq);
    if (other !== undefined) expect(other, `seq ${e.seq}${label}`).toBe(e.id);
    bySeq.set(e.seq, e.id);
  }
  return bySeq;
}

/** The seqs, taken where each first went out, increase. */
export function expectFirstSentInSeqOrder(ofObject: readonly Distributed[]): void {
  const firstSeen: number[] = [];
  const seen = new Set<number>();
  for (const e of ofObject) {
    if (!seen.has(e.seq)) firstSeen.push(e.seq);
    seen.add(e.seq);
  }
  expect(firstSeen).toEqual([...firstSeen].sort((x, y) => x - y));
}

/** Each event keeps the seq it went out with first (sent again, it is sent as itself); answers each event's seq. */
export function expectOneSeqPerEvent(delivered: readonly Distributed[]): Map<string, number> {
  const seqOf = new Map<string, number>();
  for (const event of delivered) {
    const known = seqOf.get(event.id);
    if (known !== undefined) expect(event.seq, `seq of ${event.id}`).toBe(known);
    seqOf.set(event.id, event.seq);
  }
  return seqOf;
}

/**
 * Time passes by `step` (leases expire, abandoned slots age out), the reconciler runs and
 * every doorbell rung is served, round after round, until no object is scheduled or
 * holds events (30 rounds at most: what is left then fails the property's checks).
 */
export async function quiesce(run: {
  readonly store: QueueStore;
  readonly keys: readonly ObjectKey[];
  readonly step: number;
  readonly advance: (ms: number) => void;
  readonly reconcile: () => Promise<unknown>;
  readonly ringing: () => boolean;
  readonly serve: (object: number) => Promise<void>;
}): Promise<void> {
  for (let round = 0; round < 30; round++) {
    run.advance(run.step);
    await run.reconcile();
    for (let guard = 0; guard < 200 && run.ringing(); guard++) {
      for (let o = 0; o < run.keys.length; o++) await run.serve(o);
    }
    const metas = await Promise.all(run.keys.map((k) => run.store.readMeta(k)));
    if (metas.every((m) => !m || (m.depth === 0 && !m.scheduled))) break;
  }
}
