/**
 * The decisions of a distributor turn, free of I/O (SPEC §2 Bounded turns,
 * Sequencing). The queue protocol:
 *
 * - Ingest reserves slots on the object's meta item (one conditional write that
 *   checks the cap, counts depth and flips `scheduled`), then writes one event item
 *   per slot. Slots are numbered by arrival; they are not sequence numbers.
 * - The distributor, holding the lease, reads the event items after its cursor and
 *   takes the contiguous run of slots from cursor + 1. A missing slot is an ingest
 *   still between its two writes: the turn waits for it, unless the ingest must
 *   have died (its slot was reserved more than `ingestGraceMs` ago), in which case
 *   the slot is skipped. Its producer never got a 202, so nothing accepted is lost.
 * - Each taken event gets the next `seq`; the distributor is the only writer of seq.
 * - An event past the retention period is consumed without a seq and stands in a
 *   `sluice.gap` marker (reason `retention`), as do missing slots that may have been
 *   reserved longer ago than the retention period: DynamoDB's TTL may have deleted
 *   their items (see `planChunk`).
 */
import type { PendingEvent } from './model.ts';

/** What a turn knows of the object's meta item. */
export interface QueueMeta {
  /** Events reserved and not yet distributed or skipped. */
  readonly depth: number;
  /** The last slot ingest reserved. */
  readonly lastSlot: number;
  /** The last slot the distributor consumed (distributed or skipped). */
  readonly cursor: number;
  /** The last seq assigned. */
  readonly seq: number;
  /** When ingest last reserved a slot (epoch ms). */
  readonly reservedAt: number;
  readonly scheduled: boolean;
  readonly fence: number;
  /** The chunk the last holder committed and may not have published. */
  readonly turn: TurnRecord | undefined;
  /** The per-object rate's theoretical arrival time (epoch ms; see core/admission.ts). */
  readonly tat: number | undefined;
  /** When the object last went from idle to scheduled (epoch ms), while scheduled. */
  readonly scheduledAt: number | undefined;
  /**
   * The earliest the slots after `cursor` can have been reserved (epoch ms), as the turn
   * that last moved the cursor knew it (ChunkPlan.floorAt: the last slot it consumed),
   * while scheduled: the next turn's plan starts from it, not from `scheduledAt` alone.
   */
  readonly floorAt?: number;
  /**
   * The retention period (ms) of the ingest that scheduled the object, while scheduled:
   * its pending events were written with that TTL, or another if the period was changed
   * since (see the distributor's `missingRetentionMs`).
   */
  readonly scheduledRetentionMs?: number;
  /** When a distributor last took the lease or rang again (epoch ms). */
  readonly turnAt: number | undefined;
  /** When the current lease expires (epoch ms), if there is one. */
  readonly leaseUntil: number | undefined;
  /**
   * When a turn last left the object paused (epoch ms), until a turn ends unpaused: its
   * doorbell was acknowledged and only a lift rings it (see app/reconciler.ts).
   */
  readonly pausedAt: number | undefined;
  /**
   * The last re-ring the reconciler sent for this stuck spell (`<last sign>.<rings due>`,
   * see app/reconciler.ts), so that one a run had no time for is sent by the next.
   */
  readonly rerung?: string;
  /** Events a drop switch discarded and no gap marker has stood for yet. */
  readonly switchDropped: number;
  /** The parents of those events that had a subscriber then, so the marker reaches the same webhooks and streams. */
  readonly switchDroppedParents: readonly string[];
  /**
   * An event kept on the meta item itself (see QueueStore.reserve): always the one
   * at slot `cursor + 1`, and removed by the write that moves the cursor past it.
   */
  readonly inline: PendingItem | undefined;
}

/** A committed chunk: slots fromSlot..toSlot, the present ones numbered from firstSeq. */
export interface TurnRecord {
  readonly fromSlot: number;
  readonly toSlot: number;
  readonly firstSeq: number;
  /** The chunk's first event, when it was kept on the meta item (it has no slot item to read again). */
  readonly inline?: Record<string, unknown>;
  /**
   * When the chunk was planned (epoch ms): publishing it again judges expiry at this
   * time, so the same events get the same seqs however late that is.
   */
  readonly plannedAt?: number;
  /**
   * The slots of fromSlot..toSlot the plan gave no seq (void, missing, expired), as
   * inclusive ranges, nearly always none: publishing the chunk again gives each other
   * slot its planned seq by its place, so an item DynamoDB's TTL deleted meanwhile (an
   * event that expired after the plan) is a hole its gap marker announces, not a shift
   * of every later seq. Absent on records written before it was kept.
   */
  readonly skipped?: ReadonlyArray<readonly [number, number]>;
}

/** The slots of fromSlot..toSlot not among `taken`, as inclusive ranges (see TurnRecord.skipped). */
export function skippedRanges(fromSlot: number, toSlot: number, taken: readonly { slot: number }[]): Array<[number, number]> {
  const slots = new Set(taken.map((item) => item.slot));
  const ranges: Array<[number, number]> = [];
  for (let slot = fromSlot; slot <= toSlot; slot++) {
    if (slots.has(slot)) continue;
    const last = ranges.at(-1);
    if (last && last[1] === slot - 1) last[1] = slot;
    else ranges.push([slot, slot]);
  }
  return ranges;
}

/** The slots of a turn record that were given seqs, in order (its fromSlot..toSlot less the skipped ones). */
export function takenSlots(turn: Pick<TurnRecord, 'fromSlot' | 'toSlot' | 'skipped'>): number[] {
  const slots: number[] = [];
  for (let slot = turn.fromSlot; slot <= turn.toSlot; slot++) {
    if (!(turn.skipped ?? []).some(([from, to]) => slot >= from && slot <= to)) slots.push(slot);
  }
  return slots;
}

/**
 * A committed chunk's events as its plan numbered them, from its slots' items read again,
 * and how many slots the plan took have no item any more (an event that expired after the
 * plan, its item deleted by DynamoDB's TTL): their seqs are holes. A record from before the
 * skipped slots were kept numbers its items as a plan would: not the void ones, nor those
 * expired when it was planned.
 */
export function chunkAgain<T extends PendingItem>(
  items: readonly T[],
  turn: TurnRecord,
): { events: (T & { seq: number })[]; gone: number } {
  if (turn.skipped === undefined) {
    return {
      events: assignSeq(
        items.filter((item) => !item.void && !item.expired),
        turn.firstSeq - 1,
      ),
      gone: 0,
    };
  }
  const bySlot = new Map(items.filter((item) => !item.void).map((item) => [item.slot, item]));
  const events: (T & { seq: number })[] = [];
  let gone = 0;
  for (const [index, slot] of takenSlots(turn).entries()) {
    const item = bySlot.get(slot);
    if (item) events.push({ ...item, seq: turn.firstSeq + index });
    else gone += 1;
  }
  return { events, gone };
}

export interface PendingItem extends PendingEvent {
  /** When the ingest that wrote this item had its slot reserved (epoch ms). */
  readonly reservedAt: number;
  /** True for a slot whose ingest failed after reserving it: skip it at once. */
  readonly void: boolean;
  /** True for an event past the retention period (as judged when read): it is dropped and counted, not delivered. */
  readonly expired: boolean;
  /** When the event expires (epoch ms), if it was read with its expiry: a plan judges it again at its own time. */
  readonly expiresAt?: number;
}

export interface ChunkPlan {
  /** Events to distribute, in slot order. */
  readonly take: readonly PendingItem[];
  /** Slots consumed without an event (void, or abandoned by a dead ingest). */
  readonly skipped: number;
  /**
   * Accepted events consumed without delivery because they outlived the retention
   * period, and missing slots reserved longer ago than that (TTL may have deleted them).
   */
  readonly expired: number;
  /** The parents of the expired events that were still there to read. */
  readonly expiredParents: readonly string[];
  /** The cursor after this chunk. */
  readonly cursor: number;
  /**
   * The earliest the slots after `cursor` can have been reserved (epoch ms), when known:
   * the next chunk's plan starts from it (see `planChunk`).
   */
  readonly floorAt: number | undefined;
  /** True when the chunk stopped at a slot whose ingest may still be writing it. */
  readonly waiting: boolean;
  /**
   * The retention period the last item this chunk consumed was written with (see
   * `writtenRetentionMs`), when known: the next chunk judges a missing run at its start by it.
   */
  readonly lastWrittenMs: number | undefined;
}

/**
 * The retention period an item was written with: its TTL less its reservation, to the
 * minute (its TTL is kept in whole seconds). Undefined for a void or an item read
 * without its expiry. A deploy that changed `retentionDays` leaves the items written
 * before it with the period they were written with, which DynamoDB's TTL keeps to.
 */
export function writtenRetentionMs(item: PendingItem | undefined): number | undefined {
  if (item === undefined || item.void || item.expiresAt === undefined) return undefined;
  return Math.round((item.expiresAt - item.reservedAt) / 60_000) * 60_000;
}

/**
 * Whether an event is past the retention period at `now`. A plan judges its events at
 * the time it records (TurnRecord.plannedAt), not when each was read (an inline event
 * at the lease, the slots just before): a holder that publishes the chunk again judges
 * them at that time, and must find what the plan found.
 */
function expiredAt(item: PendingItem, now: number): boolean {
  return item.expiresAt === undefined ? item.expired : item.expiresAt <= now;
}

/**
 * Plans one chunk from the items read after `meta.cursor` (sorted by slot).
 * Takes at most `limit` events. `readAll` says the read reached the end of the
 * queue, so reserved slots beyond the last item really have no item yet.
 *
 * A run of missing slots, once its ingests must be gone, is either slots whose ingest
 * died before writing (its producer got no 202: skipped) or accepted events DynamoDB's
 * TTL deleted (expired, and announced). Slots are reserved in order, so the run was
 * reserved after the slot before it and before the item after it. It is counted as
 * expired when either bound says it may be past the retention period: the item after
 * it, or the earliest any pending slot can have been reserved (`scheduledAt`, when the
 * object last went from idle to scheduled; it goes idle only with nothing pending), or
 * the last slot a turn consumed (this one's, or the one the last turn committed: the
 * caller passes the later as `scheduledAt`). Without the earlier bound, an object paused
 * longer than the retention period while its producer kept publishing lost its oldest
 * events to TTL with no marker: the item after them was young. A dead ingest's slot in
 * such an old backlog is announced as expired too (a marker that counts one more), never
 * the other way round.
 */
export function planChunk(
  items: readonly PendingItem[],
  meta: Pick<QueueMeta, 'cursor' | 'lastSlot' | 'reservedAt' | 'scheduledAt'>,
  now: number,
  timing: { readonly ingestGraceMs: number; readonly retentionMs: number; readonly beforeWrittenMs?: number | undefined },
  limit: number,
  readAll: boolean,
): ChunkPlan {
  const take: PendingItem[] = [];
  let skipped = 0;
  let expired = 0;
  const parents = new Set<string>();
  let next = meta.cursor + 1;
  // The earliest the slot at `next` can have been reserved, when known.
  let floorAt = meta.scheduledAt;
  // The retention period the item before `next` was written with, when known.
  let beforeMs = timing.beforeWrittenMs;
  // Not known (that item was consumed by an earlier turn): the shortest period of the
  // items read stands in for it, as the one that may have been written before them.
  const shortestRead = Math.min(...items.map((item) => writtenRetentionMs(item) ?? Number.POSITIVE_INFINITY));
  const plan = (waiting: boolean): ChunkPlan => ({
    take,
    skipped,
    expired,
    expiredParents: [...parents],
    cursor: next - 1,
    floorAt,
    waiting,
    lastWrittenMs: beforeMs,
  });
  // Slots with no item, reserved after `floorAt` and at or before `reservedAt` (that of
  // `after`, the item after them, if any): an ingest that died (its producer got no
  // 202), or accepted events TTL may have deleted. Judged by the shortest of the turn's
  // period and those the items on either side were written with: slots are reserved in
  // order, so theirs were written under one of those (a deploy that raised the period
  // left a backlog written with the old). Not by the period of an item further on: a
  // slot no ingest wrote between items kept 7 days, before an item of a day's period
  // (the period lowered for a while, then raised back), would be announced as events
  // TTL deleted.
  const missing = (count: number, reservedAt: number, after: PendingItem | undefined) => {
    const retentionMs = Math.min(timing.retentionMs, beforeMs ?? shortestRead, writtenRetentionMs(after) ?? Number.POSITIVE_INFINITY);
    // An ingest stamps its reservation before its write takes the slot, and in another
    // container with a clock of its own: a later slot's stamp may precede an earlier
    // one's by up to the grace (seconds of clocks apart fall well within it).
    const mayBeGone = now - reservedAt > retentionMs || (floorAt !== undefined && now - (floorAt - timing.ingestGraceMs) > retentionMs);
    if (mayBeGone) expired += count;
    else skipped += count;
  };
  for (const item of items) {
    if (take.length >= limit) break;
    if (item.slot < next) continue;
    if (item.slot > next) {
      // Slots next..item.slot-1 were reserved before this item's slot. If this item's
      // reservation is older than the grace, theirs is too: their ingests are gone.
      if (now - item.reservedAt <= timing.ingestGraceMs) return plan(true);
      missing(item.slot - next, item.reservedAt, item);
      next = item.slot;
    }
    if (item.void) skipped += 1;
    else if (expiredAt(item, now)) {
      expired += 1;
      for (const parent of item.parents) parents.add(parent);
    } else take.push(item);
    next += 1;
    floorAt = Math.max(floorAt ?? item.reservedAt, item.reservedAt);
    // A void names no period: the one before it still bounds the slots after it.
    beforeMs = writtenRetentionMs(item) ?? beforeMs;
  }
  if (readAll && take.length < limit && next <= meta.lastSlot && items.every((item) => item.slot < next)) {
    // Reserved slots at the tail with no item yet.
    if (now - meta.reservedAt <= timing.ingestGraceMs) return plan(true);
    missing(meta.lastSlot - next + 1, meta.reservedAt, undefined);
    next = meta.lastSlot + 1;
    floorAt = Math.max(floorAt ?? meta.reservedAt, meta.reservedAt);
  }
  return plan(false);
}

/** Assigns seq to a chunk's events, in slot order, after the object's last seq. */
export function assignSeq<T extends PendingEvent>(events: readonly T[], lastSeq: number): (T & { seq: number })[] {
  return events.map((event, index) => ({ ...event, seq: lastSeq + index + 1 }));
}

export interface TurnBudget {
  readonly maxEvents: number;
  readonly maxMs: number;
}

/** Whether a turn that started at `startedAt` and distributed `drained` events may go on. */
export function turnMayContinue(budget: TurnBudget, drained: number, startedAt: number, now: number): boolean {
  return drained < budget.maxEvents && now - startedAt < budget.maxMs;
}

/** Whether a lease read at `now` is free to take. */
export function leaseIsFree(leaseUntil: number | undefined, now: number): boolean {
  return leaseUntil === undefined || leaseUntil <= now;
}

/**
 * Whether nothing about an object keeps its inline event from a quiet turn: no turn
 * record to publish again, no drop count to mark, no live lease. The ingest's write
 * (for the doorbell's snapshot) and the quiet turn's own read both ask this.
 */
export function quietTurnAllowed(meta: Pick<QueueMeta, 'turn' | 'switchDropped' | 'leaseUntil'>, now: number): boolean {
  return meta.turn === undefined && meta.switchDropped === 0 && leaseIsFree(meta.leaseUntil, now);
}

/**
 * How long after its event was reserved a quiet doorbell's snapshot is trusted in
 * place of the meta item. A snapshot is right unless another turn consumed the event
 * first, from an older doorbell of the same FIFO group (a reconciler's or a lift's
 * ring queued while the object was busy). A turn that published it gave it the same
 * seq, so publishing it again is the at-least-once duplicate a consumer drops by seq;
 * but a turn that dropped it under a drop switch (its switch cache a few seconds
 * behind the quiet turn's) counted it for a gap marker, and publishing it would both
 * deliver and drop it. So drop turns leave such an event alone until no snapshot of it
 * can be trusted any more (see `snapshotHoldMs`). Doorbells are received well within
 * this window in normal traffic (the bench's end-to-end p99 is under 100 ms), so the
 * quiet path keeps its cost of one write and no read; one received later reads.
 */
export const SNAPSHOT_TRUST_MS = 5_000;
/**
 * How far apart two containers' clocks may be (NTP-synced, not equal: a second or two),
 * given to the drop turn's side of that window.
 */
const CLOCK_SKEW_MS = 2_000;

/** Whether a quiet doorbell's snapshot of an event reserved at `reservedAt` may stand in for the meta item at `now`. */
export function snapshotTrusted(reservedAt: number, now: number): boolean {
  return now - reservedAt < SNAPSHOT_TRUST_MS;
}

/**
 * How long a drop turn must leave the object's inline event alone before it may drop
 * it: until a quiet turn no longer trusts a snapshot of it (0 when it may drop it now).
 * The turn of the doorbell that carried the snapshot (`ownSnapshotId`, on its first
 * receive) may drop it at once: its snapshot was that doorbell's only trusted one.
 */
export function snapshotHoldMs(inline: Pick<PendingItem, 'id' | 'reservedAt'> | undefined, now: number, ownSnapshotId?: string): number {
  if (!inline || inline.id === ownSnapshotId) return 0;
  return Math.max(0, inline.reservedAt + SNAPSHOT_TRUST_MS + CLOCK_SKEW_MS - now);
}

/** The longest wait between re-rings of one stuck object. */
const MAX_RERING_SPACING_MS = 3_600_000;

/**
 * How many re-rings are due for an object stuck this long: at `stuckAfterMs` × 1, 2,
 * 4, 8… and then hourly. A doorbell that only waits in a backlogged distribute queue
 * (not lost) then gains a few copies in its group, not one per sweep for as long as the
 * backlog lasts (SPEC §2: a group holds one or two messages).
 */
export function reringsDue(stuckForMs: number, stuckAfterMs: number): number {
  let due = 0;
  for (let at = stuckAfterMs; at <= stuckForMs; at += Math.min(at, MAX_RERING_SPACING_MS)) due++;
  return due;
}
