/**
 * A sync token stays valid for the whole retention period (SPEC §3 Event streams):
 * a consumer that polls once and comes back just under 7 days later still gets
 * everything that happened since, and one day later the token and the stream are
 * gone (412 with a fresh token).
 */
import { describe, expect, it } from 'vitest';
import { publish } from '../../functions/app/ingest.ts';
import { pollStream, type StreamDeps } from '../../functions/app/streams.ts';
import { distributorAt, ingestAt, streamRig } from '../support/streams.ts';

const DAY = 86_400_000;
const rig = streamRig();

describe('a sync token', () => {
  it('is valid for the whole retention period after it was issued, and refused after the stream expired', async () => {
    let clock = Date.now();
    const now = () => clock;
    const k = { tenantId: 'ten_week', resource: 'doc:week' };
    const reader: StreamDeps = { streams: rig.streams, retentionDays: 7, now };
    const start = await pollStream(reader, k.tenantId, k.resource, undefined);
    expect(start.status).toBe(412);

    // An event a little later, distributed at once.
    clock += 10_000;
    await publish(
      ingestAt(rig, now, () => 'evt_week1'),
      k.tenantId,
      [{ resource: k.resource, parents: [], type: 'a.b', data: 1, idempotencyKey: undefined }],
    );
    const distributor = distributorAt(rig, now);
    expect(await distributor.runTurn(k, 'w')).toMatchObject({ distributed: 1 });

    // Polled 1.5 s later, the event is still settling: not served yet.
    clock += 1_500;
    const early = await pollStream(reader, k.tenantId, k.resource, start.sync);
    expect(early).toMatchObject({ status: 200, data: [] });

    // Seven days after that token was issued, less a second: still valid, and the event is there.
    clock += 7 * DAY - 1_000;
    const late = await pollStream(reader, k.tenantId, k.resource, early.sync);
    expect(late).toMatchObject({ status: 200, data: [{ id: 'evt_week1', seq: 1 }], has_more: false });

    // Nobody polls for another seven days: the stream expired, and its last token with it.
    clock += 7 * DAY + 1;
    expect((await pollStream(reader, k.tenantId, k.resource, late.sync)).status).toBe(412);
  });
});
