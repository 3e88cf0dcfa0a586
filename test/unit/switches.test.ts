import { describe, expect, it } from 'vitest';
import { CachedSwitches, REFRESH_SPACING_MS } from '../../functions/adapters/switch-store.ts';
import { liftRecheck, releasedSince, releaseLookAt, releaseStepEndsBy, type Switch } from '../../functions/core/switches.ts';

describe('the recheck after a hold under a switch', () => {
  it('answers for every hold of its window of the switch cache, and runs a margin past its end', () => {
    expect(liftRecheck(10_000, 5_000, 1_000)).toEqual({ heldBefore: 15_000, delaySeconds: 6 });
    expect(liftRecheck(14_999, 5_000, 1_000)).toEqual({ heldBefore: 15_000, delaySeconds: 2 });
    expect(liftRecheck(14_100, 500, 1_000)).toEqual({ heldBefore: 14_500, delaySeconds: 2 });
    // SQS delays a message 15 minutes at most.
    expect(liftRecheck(0, 3_600_000, 1_000).delaySeconds).toBe(900);
  });

  it('starts no release when one began after the holds it answers for (past the margin for clocks)', () => {
    expect(releasedSince(16_001, 15_000, 1_000)).toBe(true);
    expect(releasedSince(16_000, 15_000, 1_000)).toBe(false);
    expect(releasedSince(14_000, 15_000, 1_000)).toBe(false);
    expect(releasedSince(undefined, 15_000, 1_000)).toBe(false);
  });

  it('notes a release step that sends nothing (a wait for its time) as one that has ended by now', () => {
    expect(releaseStepEndsBy(releaseLookAt(100_000, 5_000, 1_000), 5_000, 1_000)).toBe(100_000);
    expect(releaseStepEndsBy(100_000, 5_000, 1_000)).toBe(111_000);
  });
});

describe('the switch cache', () => {
  const pause: Switch = { id: 'sw_p', scope: 'tenant', tenant: 'ten_a', target: undefined, action: 'pause', reason: '', created_at: '' };

  /** A store whose reads answer when the test says, each with the switches as they were when it was sent. */
  function slowStore() {
    let stored: Switch[] = [pause];
    const reads: Array<() => void> = [];
    const store = {
      list: () => {
        const seen = [...stored];
        return new Promise<Switch[]>((resolve) => reads.push(() => resolve(seen)));
      },
    };
    const lift = () => {
      stored = [];
    };
    return { store, reads, lift };
  }

  it('reads at most once per ttl, concurrent callers sharing one read', async () => {
    let now = 0;
    const { store, reads } = slowStore();
    const cache = new CachedSwitches(store, 5_000, () => now);
    const both = Promise.all([cache.current(), cache.current()]);
    expect(reads).toHaveLength(1);
    reads[0]?.();
    expect(await both).toEqual([[pause], [pause]]);
    now = 4_999;
    expect(await cache.current()).toEqual([pause]);
    expect(reads).toHaveLength(1);
  });

  it('ages what a slow read answered from when the read was sent, so nothing is kept longer than the ttl after it', async () => {
    let now = 0;
    const { store, reads, lift } = slowStore();
    const cache = new CachedSwitches(store, 5_000, () => now);
    const first = cache.current();
    // The read takes 3 s to answer; the switch is lifted just after it was sent.
    lift();
    now = 3_000;
    reads.shift()?.();
    expect(await first).toEqual([pause]);
    // 5 s after the read was sent, what it answered is too old: a new read is sent.
    now = 5_000;
    const second = cache.current();
    expect(reads).toHaveLength(1);
    reads.shift()?.();
    expect(await second).toEqual([]);
  });

  it('does not share a read under way that was sent more than a ttl ago: it may have been sent before a switch was set', async () => {
    let now = 0;
    const { store, reads, lift } = slowStore();
    const cache = new CachedSwitches(store, 5_000, () => now);
    // A read is sent at 0 and answers only 6 s on (a busy container); the pause is lifted meanwhile.
    const slow = cache.current();
    lift();
    now = 4_999;
    expect(reads).toHaveLength(1);
    const shared = cache.current();
    expect(reads).toHaveLength(1);
    now = 5_000;
    const later = cache.current();
    expect(reads).toHaveLength(2);
    reads.shift()?.();
    expect(await slow).toEqual([pause]);
    expect(await shared).toEqual([pause]);
    reads.shift()?.();
    expect(await later).toEqual([]);
    expect(await cache.current()).toEqual([]);
  });

  it('refreshes with a read sent after it was asked, not one already under way from before a lift', async () => {
    const { store, reads, lift } = slowStore();
    const cache = new CachedSwitches(store, 5_000, () => 0);
    // A turn's read is under way when the switch is lifted; the lift's ring asks for a fresh read.
    const earlier = cache.current();
    lift();
    const fresh = Promise.all([cache.refresh(), cache.refresh()]);
    reads.shift()?.();
    expect(await earlier).toEqual([pause]);
    await new Promise((resolve) => setTimeout(resolve, REFRESH_SPACING_MS + 20));
    // One read for both refreshes, sent after the earlier one answered.
    expect(reads).toHaveLength(1);
    reads.shift()?.();
    expect(await fresh).toEqual([[], []]);
    expect(await cache.current()).toEqual([]);
  });

  it("spaces a container's refreshes REFRESH_SPACING_MS apart, the turns asking meanwhile sharing the next read", async () => {
    // Every turn of a paused tenant's objects refreshes: 20 at once, each turn after
    // turn for 1 s, against a store that answers in a millisecond.
    let reads = 0;
    const store = {
      list: async () => {
        reads++;
        await new Promise((resolve) => setTimeout(resolve, 1));
        return [pause];
      },
    };
    const cache = new CachedSwitches(store, 5_000);
    const until = performance.now() + 1_000;
    let refreshes = 0;
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        while (performance.now() < until) {
          expect(await cache.refresh()).toEqual([pause]);
          refreshes++;
        }
      }),
    );
    // Back to back, one read a round trip: some hundreds.
    expect(reads).toBeLessThanOrEqual(1_000 / REFRESH_SPACING_MS + 2);
    expect(refreshes).toBeGreaterThanOrEqual(20 * (reads - 1));
  });
});
