import { describe, expect, it } from 'vitest';
import {
  assignSeq,
  leaseIsFree,
  type PendingItem,
  planChunk,
  quietTurnAllowed,
  reringsDue,
  SNAPSHOT_TRUST_MS,
  skippedRanges,
  snapshotHoldMs,
  snapshotTrusted,
  takenSlots,
  turnMayContinue,
} from '../../functions/core/turn.ts';

const GRACE = 60_000;
const RETENTION = 7 * 86_400_000;
const NOW = 10 * 86_400_000;
const TIMING = { ingestGraceMs: GRACE, retentionMs: RETENTION };

const item = (slot: number, reservedAt = NOW - 10, isVoid = false, expired = false, parents: string[] = []): PendingItem => ({
  id: `evt_${slot}`,
  slot,
  resource: 'task:1',
  parents,
  type: 't',
  data: null,
  createdAt: '',
  reservedAt,
  void: isVoid,
  expired,
});

// Scheduled (gone from idle) before any of its pending slots was reserved.
const meta = (cursor: number, lastSlot: number, reservedAt = NOW - 10, scheduledAt: number | undefined = NOW - GRACE - 1_000) => ({
  cursor,
  lastSlot,
  reservedAt,
  scheduledAt,
});

describe('planChunk', () => {
  it('takes the contiguous slots after the cursor', () => {
    const plan = planChunk([item(4), item(5), item(6)], meta(3, 6), NOW, TIMING, 100, true);
    expect(plan.take.map((i) => i.slot)).toEqual([4, 5, 6]);
    expect(plan).toMatchObject({ cursor: 6, skipped: 0, waiting: false });
  });

  it('stops at the limit', () => {
    const plan = planChunk([item(1), item(2), item(3)], meta(0, 3), NOW, TIMING, 2, false);
    expect(plan.take.map((i) => i.slot)).toEqual([1, 2]);
    expect(plan.cursor).toBe(2);
  });

  it('waits at a missing slot whose ingest may still be writing', () => {
    const plan = planChunk([item(1), item(3)], meta(0, 3), NOW, TIMING, 100, true);
    expect(plan.take.map((i) => i.slot)).toEqual([1]);
    expect(plan).toMatchObject({ cursor: 1, waiting: true, skipped: 0 });
  });

  it('skips a missing slot once a later slot is older than the grace (its ingest died)', () => {
    const plan = planChunk([item(1), item(3, NOW - GRACE - 1)], meta(0, 3), NOW, TIMING, 100, true);
    expect(plan.take.map((i) => i.slot)).toEqual([1, 3]);
    expect(plan).toMatchObject({ cursor: 3, skipped: 1, waiting: false });
  });

  it('skips void slots at once', () => {
    const plan = planChunk([item(1, NOW, true), item(2)], meta(0, 2), NOW, TIMING, 100, true);
    expect(plan.take.map((i) => i.slot)).toEqual([2]);
    expect(plan).toMatchObject({ cursor: 2, skipped: 1 });
  });

  it('consumes expired events without taking them, and counts them apart', () => {
    const plan = planChunk([item(1, NOW, false, true), item(2)], meta(0, 2), NOW, TIMING, 100, true);
    expect(plan.take.map((i) => i.slot)).toEqual([2]);
    expect(plan).toMatchObject({ cursor: 2, skipped: 0, expired: 1 });
  });

  it("names the expired events' parents, for the gap marker that stands for them", () => {
    const plan = planChunk(
      [item(1, NOW, false, true, ['project:1']), item(2, NOW, false, true, ['project:1', 'team:2']), item(3)],
      meta(0, 3),
      NOW,
      TIMING,
      100,
      true,
    );
    expect(plan).toMatchObject({ cursor: 3, expired: 2, expiredParents: ['project:1', 'team:2'] });
  });

  it('counts missing slots reserved longer ago than the retention period as expired, not skipped (TTL may have deleted them)', () => {
    const old = NOW - RETENTION - 1;
    const between = planChunk([item(1, old, false, true), item(4, old, false, true), item(5)], meta(0, 5), NOW, TIMING, 100, true);
    expect(between).toMatchObject({ cursor: 5, expired: 4, skipped: 0 });
    expect(between.take.map((i) => i.slot)).toEqual([5]);
    const tail = planChunk([], meta(0, 3, old), NOW, TIMING, 100, true);
    expect(tail).toMatchObject({ cursor: 3, expired: 3, skipped: 0 });
  });

  it('judges missing slots by the periods the items on either side were written with, not by an item further on', () => {
    // Kept 7 days around the missing slot, a day's period (lowered for a while) after them.
    const DAY = 86_400_000;
    const written = (slot: number, reservedAt: number, days: number): PendingItem => ({
      ...item(slot, reservedAt),
      expiresAt: reservedAt + days * DAY,
    });
    const items = [written(1, NOW - 3 * DAY, 7), written(3, NOW - 3 * DAY + 60_000, 7), written(4, NOW - DAY / 2, 1)];
    const between = planChunk(items, meta(0, 4, NOW - DAY / 2, NOW - 3 * DAY), NOW, TIMING, 100, true);
    expect(between).toMatchObject({ cursor: 4, skipped: 1, expired: 0, lastWrittenMs: DAY });
    // Its first missing slots after the chunk before it, whose last item was kept a day: deleted by TTL.
    const after = planChunk(
      [written(3, NOW - 3 * DAY + 60_000, 7)],
      meta(1, 3, NOW - 3 * DAY + 60_000, NOW - 3 * DAY),
      NOW,
      {
        ...TIMING,
        beforeWrittenMs: DAY,
      },
      100,
      true,
    );
    expect(after).toMatchObject({ cursor: 3, skipped: 0, expired: 1 });
    // The item before them consumed by an earlier turn: the shortest period read stands in for it.
    const unknown = planChunk(
      [written(3, NOW - 3 * DAY + 60_000, 7), written(4, NOW - DAY / 2, 1)],
      meta(1, 4, NOW - DAY / 2, NOW - 3 * DAY),
      NOW,
      TIMING,
      100,
      true,
    );
    expect(unknown).toMatchObject({ cursor: 4, skipped: 0, expired: 1 });
  });

  it('counts missing slots as expired when the object has been scheduled longer than the retention period, though the item after them is young', () => {
    // Paused for eight days while its producer kept publishing: TTL deleted the oldest
    // accepted events; the first left was reserved a day ago.
    const scheduledAt = NOW - RETENTION - 3_600_000;
    const plan = planChunk([item(4, NOW - 86_400_000), item(5)], meta(0, 5, NOW - 10, scheduledAt), NOW, TIMING, 100, true);
    expect(plan).toMatchObject({ cursor: 5, expired: 3, skipped: 0 });
    expect(plan.take.map((i) => i.slot)).toEqual([4, 5]);
    const tail = planChunk([], meta(0, 3, NOW - GRACE - 1, scheduledAt), NOW, TIMING, 100, true);
    expect(tail).toMatchObject({ cursor: 3, expired: 3, skipped: 0 });
  });

  it('skips a dead ingest’s slot in an old backlog once a slot after the old ones was consumed (reserved later than it)', () => {
    const scheduledAt = NOW - RETENTION - 3_600_000;
    const plan = planChunk(
      [item(1, NOW - 3_600_000), item(3, NOW - GRACE - 1)],
      meta(0, 3, NOW - GRACE - 1, scheduledAt),
      NOW,
      TIMING,
      100,
      true,
    );
    expect(plan).toMatchObject({ cursor: 3, expired: 0, skipped: 1, floorAt: NOW - GRACE - 1 });
    // The next chunk starts from what this one consumed, not from when the object was scheduled.
    const next = planChunk([item(5, NOW - GRACE - 1)], meta(3, 5, NOW - GRACE - 1, plan.floorAt), NOW, TIMING, 100, true);
    expect(next).toMatchObject({ cursor: 5, expired: 0, skipped: 1 });
  });

  it('waits for reserved tail slots with no item yet, then skips them after the grace', () => {
    expect(planChunk([item(1)], meta(0, 3), NOW, TIMING, 100, true)).toMatchObject({ cursor: 1, waiting: true });
    expect(planChunk([item(1)], meta(0, 3, NOW - GRACE - 1), NOW, TIMING, 100, true)).toMatchObject({
      cursor: 3,
      skipped: 2,
      waiting: false,
    });
  });

  it('never decides about the tail when the read did not reach the end', () => {
    const plan = planChunk([item(1)], meta(0, 3, NOW - GRACE - 1), NOW, TIMING, 100, false);
    expect(plan).toMatchObject({ cursor: 1, skipped: 0, waiting: false });
  });

  it('ignores items at or before the cursor', () => {
    const plan = planChunk([item(2), item(3)], meta(2, 3), NOW, TIMING, 100, true);
    expect(plan.take.map((i) => i.slot)).toEqual([3]);
  });
});

describe('sequencing', () => {
  it('numbers events after the last seq, one by one in slot order', () => {
    expect(assignSeq([item(7), item(9)], 41).map((e) => [e.slot, e.seq])).toEqual([
      [7, 42],
      [9, 43],
    ]);
  });
});

describe('turn bounds and leases', () => {
  it('ends a turn after N events or T milliseconds', () => {
    const budget = { maxEvents: 500, maxMs: 2_000 };
    expect(turnMayContinue(budget, 499, 0, 1_999)).toBe(true);
    expect(turnMayContinue(budget, 500, 0, 10)).toBe(false);
    expect(turnMayContinue(budget, 10, 0, 2_000)).toBe(false);
  });

  it('treats an expired or absent lease as free', () => {
    expect(leaseIsFree(undefined, 5)).toBe(true);
    expect(leaseIsFree(5, 5)).toBe(true);
    expect(leaseIsFree(6, 5)).toBe(false);
  });

  it('allows a quiet turn only with no turn record, no drop count and no live lease', () => {
    const idle = { turn: undefined, switchDropped: 0, leaseUntil: undefined };
    expect(quietTurnAllowed(idle, 5)).toBe(true);
    expect(quietTurnAllowed({ ...idle, leaseUntil: 5 }, 5)).toBe(true);
    expect(quietTurnAllowed({ ...idle, leaseUntil: 6 }, 5)).toBe(false);
    expect(quietTurnAllowed({ ...idle, switchDropped: 1 }, 5)).toBe(false);
    expect(quietTurnAllowed({ ...idle, turn: { fromSlot: 1, toSlot: 2, firstSeq: 1 } }, 5)).toBe(false);
  });
});

describe('quiet snapshots and drop turns', () => {
  it('trusts a snapshot only for a while after its event was reserved', () => {
    expect(snapshotTrusted(NOW - 10, NOW)).toBe(true);
    expect(snapshotTrusted(NOW - SNAPSHOT_TRUST_MS + 1, NOW)).toBe(true);
    expect(snapshotTrusted(NOW - SNAPSHOT_TRUST_MS, NOW)).toBe(false);
  });

  it('has a drop turn leave a kept event alone until no quiet turn can trust a snapshot of it, clocks a little apart', () => {
    const kept = { id: 'evt_1', reservedAt: NOW };
    expect(snapshotHoldMs(undefined, NOW)).toBe(0);
    expect(snapshotHoldMs(kept, NOW)).toBeGreaterThan(SNAPSHOT_TRUST_MS);
    // Still held just after the quiet turn's window closes: that turn's clock may be behind.
    expect(snapshotHoldMs(kept, NOW + SNAPSHOT_TRUST_MS)).toBeGreaterThan(0);
    expect(snapshotHoldMs(kept, NOW + 60_000)).toBe(0);
    // The turn of the doorbell that carried the snapshot may drop it at once.
    expect(snapshotHoldMs(kept, NOW, 'evt_1')).toBe(0);
    expect(snapshotHoldMs(kept, NOW, 'evt_2')).toBeGreaterThan(0);
  });
});

describe('re-rings of a stuck object', () => {
  it('fall due at the stuck time × 1, 2, 4, 8…, then hourly', () => {
    const stuck = 90_000;
    const due = (seconds: number) => reringsDue(seconds * 1000, stuck);
    expect([due(89), due(90), due(179), due(180), due(360), due(720), due(2_880), due(5_759)]).toEqual([0, 1, 1, 2, 3, 4, 6, 6]);
    // 90 s doubled reaches 96 minutes; the next spacing would pass an hour: then one an hour.
    expect(due(5_760)).toBe(7);
    expect(due(5_760 + 3_599)).toBe(7);
    expect(due(5_760 + 3_600)).toBe(8);
  });
});

describe('the slots a turn record took', () => {
  it('keeps the slots not taken as ranges, and gives back the taken ones in order', () => {
    const taken = [1, 2, 5, 6, 9].map((slot) => ({ slot }));
    const skipped = skippedRanges(1, 10, taken);
    expect(skipped).toEqual([
      [3, 4],
      [7, 8],
      [10, 10],
    ]);
    expect(takenSlots({ fromSlot: 1, toSlot: 10, skipped })).toEqual([1, 2, 5, 6, 9]);
    expect(
      skippedRanges(
        4,
        6,
        [4, 5, 6].map((slot) => ({ slot })),
      ),
    ).toEqual([]);
    expect(takenSlots({ fromSlot: 4, toSlot: 6, skipped: [] })).toEqual([4, 5, 6]);
  });
});
