/**
 * A drop turn waits out the snapshot a quiet doorbell may carry of its inline event,
 * but only when one can exist: while the object owes a marker, ingest hands out none.
 */
import { describe, expect, it } from 'vitest';
import { publish } from '../../functions/app/ingest.ts';
import type { Switch } from '../../functions/core/switches.ts';
import { distributorAt, ingestAt, streamRig } from '../support/streams.ts';

const rig = streamRig();

describe('a drop turn on an object that owes a marker', () => {
  it('drops a quiet event without waiting when no snapshot of it was handed out', async () => {
    let clock = 1_800_000_000_000;
    const now = () => clock;
    let ids = 0;
    const rings: Array<{ quiet?: boolean; snapshot?: unknown }> = [];
    const drop: Switch = { id: 'sw_x', scope: 'tenant', tenant: 'ten_a', target: undefined, action: 'drop', reason: '', created_at: '' };
    const switches = { current: async () => [drop], refresh: async () => [drop] };
    let slept = 0;
    const distributor = distributorAt(rig, now, {
      switches,
      sleep: async (ms) => {
        slept += ms;
        clock += ms;
      },
    });
    const ingest = {
      ...ingestAt(rig, now, () => `evt_${++ids}`),
      doorbell: { ring: async (_k: unknown, _t: string, o: { quiet?: boolean; snapshot?: unknown } = {}) => void rings.push(o) },
    };
    const key = { tenantId: 'ten_a', resource: 'obj:1' };

    // The first event: quiet, with a snapshot; its own turn drops it at once.
    await publish(ingest, key.tenantId, [{ resource: key.resource, parents: [], type: 'a.x', data: 1, idempotencyKey: undefined }]);
    expect(rings[0]).toMatchObject({ quiet: true, snapshot: expect.anything() });
    const first = await distributor.runTurn(key, 'o1', { quiet: true, snapshot: rings[0]?.snapshot as never });
    expect(slept).toBe(0);
    expect(first.outcome).toBe('idle');

    // The second, 10 s later: the object owes a marker, so ingest hands out no snapshot.
    clock += 10_000;
    await publish(ingest, key.tenantId, [{ resource: key.resource, parents: [], type: 'a.x', data: 2, idempotencyKey: undefined }]);
    expect(rings[1]).toMatchObject({ quiet: true });
    expect(rings[1]?.snapshot).toBeUndefined();
    const outcomes: string[] = [];
    for (let turn = 0; turn < 5; turn++) {
      const result = await distributor.runTurn(key, `o${turn + 2}`, { quiet: true });
      outcomes.push(result.outcome);
      if (result.outcome === 'idle') break;
    }
    // One turn drops it, waiting for nothing (before: 6 s of sleeps over four turns).
    expect(outcomes).toEqual(['idle']);
    expect(slept).toBe(0);
  });
});
