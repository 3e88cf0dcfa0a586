/**
 * Under a drop switch, a drop turn leaves an inline event alone while a quiet doorbell's
 * snapshot of it may still be trusted by another container (whose switch cache may not
 * show the drop), so that the event is never both delivered and counted in the gap
 * marker. The two containers' clocks are NTP-synced but not equal: a second or two apart.
 */
import { describe, expect, it } from 'vitest';
import { publish } from '../../functions/app/ingest.ts';
import type { Switch } from '../../functions/core/switches.ts';
import { distributorAt, ingestAt, streamRig } from '../support/streams.ts';

const rig = streamRig();

describe('a drop turn on a clock ahead of a quiet turn', () => {
  it('never drops an event that the quiet turn, 2 s behind, still publishes from its snapshot', async () => {
    let clock = 1_800_000_000_000;
    const SKEW_MS = 2_000;
    const quietNow = () => clock;
    const dropNow = () => clock + SKEW_MS;
    const key = { tenantId: 'ten_skew', resource: 'obj:1' };
    const rings: Array<{ quiet?: boolean; snapshot?: unknown }> = [];
    let ids = 0;
    const ingest = {
      ...ingestAt(rig, quietNow, () => `evt_${++ids}`),
      doorbell: { ring: async (_k: unknown, _t: string, o: { quiet?: boolean; snapshot?: unknown } = {}) => void rings.push(o) },
    };
    await publish(ingest, key.tenantId, [{ resource: key.resource, parents: [], type: 'a.x', data: 1, idempotencyKey: undefined }]);
    expect(rings[0]).toMatchObject({ quiet: true, snapshot: expect.anything() });

    // 4 s on, an older doorbell of the group reaches a container that sees the drop.
    clock += 4_000;
    const drop: Switch = {
      id: 'sw_x',
      scope: 'tenant',
      tenant: key.tenantId,
      target: undefined,
      action: 'drop',
      reason: '',
      created_at: '',
    };
    const dropper = distributorAt(rig, dropNow, {
      switches: { current: async () => [drop], refresh: async () => [drop] },
      sleep: async (ms) => {
        clock += ms;
      },
    });
    await dropper.runTurn(key, 'older');

    // The quiet doorbell, behind it in the FIFO group, comes half a second after that
    // turn ended, to a container whose switch cache does not show the drop yet.
    clock += 500;
    const published: string[] = [];
    const quiet = distributorAt(rig, quietNow, { metrics: { count: (name, n = 1) => void published.push(...Array(n).fill(name)) } });
    await quiet.runTurn(key, 'quiet', { quiet: true, snapshot: rings[0]?.snapshot as never });

    // The drop turn counted it for the gap marker: it must not be delivered too.
    expect(published).toContain('GapMarkers');
    expect(published).not.toContain('EventsDistributed');
  });
});
