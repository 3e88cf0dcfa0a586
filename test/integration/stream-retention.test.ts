/**
 * A sync token stays valid for the whole retention period (SPEC §3 Event streams):
 * a consumer that polls once and comes back just under 7 days later still gets
 * everything that happened since, and one day later the token and the stream are
 * gone (412 with a fresh token).
 */
import { DeleteCommand, QueryCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { publish } from '../../functions/app/ingest.ts';
import { pollStream, type StreamDeps } from '../../functions/app/streams.ts';
import { STREAM_CLOCKS_APART_MS } from '../../functions/core/stream-token.ts';
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

describe('a sync token in the last seconds of its retention period', () => {
  it("still finds the events after it, though DynamoDB's TTL may delete items on its own clock", async () => {
    // TTL deletes an item once the whole seconds of its `expires_at` have passed on AWS's
    // clock, which may be ahead of the API's (STREAM_CLOCKS_APART_MS). An entry's TTL is
    // as late as its own expiry, which the token's validity is measured against, or later.
    const t0 = Math.floor(Date.now() / 1000) * 1000 + 999;
    let clock = t0 - 10_000;
    const now = () => clock;
    const k = { tenantId: 'ten_lastsecond', resource: 'doc:lastsecond' };
    const reader: StreamDeps = { streams: rig.streams, retentionDays: 7, now };
    const start = await pollStream(reader, k.tenantId, k.resource, undefined);
    expect(start.status).toBe(412);
    // An event distributed at t0, a millisecond short of a whole second (its entry's expiry too).
    clock = t0;
    await publish(
      ingestAt(rig, now, () => 'evt_lastsecond1'),
      k.tenantId,
      [{ resource: k.resource, parents: [], type: 'a.b', data: 1, idempotencyKey: undefined }],
    );
    expect(await distributorAt(rig, now).runTurn(k, 'w')).toMatchObject({ distributed: 1 });
    // Polled a millisecond before it settles: the token stops just short of it.
    clock = t0 + 2_999;
    const checkpoint = await pollStream(reader, k.tenantId, k.resource, start.sync);
    expect(checkpoint).toMatchObject({ status: 200, data: [] });

    // The consumer comes back half a second before its token's retention period ends,
    // when AWS's clock may read up to STREAM_CLOCKS_APART_MS more, and TTL has deleted
    // every item it may.
    clock = t0 + 7 * DAY + 2_500;
    const awsNow = clock + STREAM_CLOCKS_APART_MS;
    const log = await rig.client.send(
      new QueryCommand({
        TableName: rig.events,
        KeyConditionExpression: '#pk = :pk',
        ExpressionAttributeNames: { '#pk': 'pk' },
        ExpressionAttributeValues: { ':pk': `slog#${k.tenantId}#${k.resource}` },
      }),
    );
    expect(log.Items).toHaveLength(1);
    for (const item of log.Items ?? []) {
      if (Number(item.expires_at) * 1000 < awsNow) {
        await rig.client.send(new DeleteCommand({ TableName: rig.events, Key: { pk: item.pk, sk: item.sk } }));
      }
    }
    const resumed = await pollStream(reader, k.tenantId, k.resource, checkpoint.sync);
    expect(resumed).toMatchObject({ status: 200, data: [{ id: 'evt_lastsecond1' }] });
  });
});

describe('a sync token after retentionDays was raised', () => {
  it('is refused once older than the retention period its stream entries were written with', async () => {
    // The stream log keeps each entry for the period in force when it was appended: after
    // the period was raised from 7 days to 14, a token from 8 days ago is past entries TTL
    // has deleted, and a 200 from it would skip them without a word.
    let clock = Date.now();
    const now = () => clock;
    const k = { tenantId: 'ten_raised', resource: 'doc:raised' };
    const reader: StreamDeps = { streams: rig.streams, retentionDays: 7, now };
    const start = await pollStream(reader, k.tenantId, k.resource, undefined);
    clock += 10_000;
    await publish(
      ingestAt(rig, now, () => 'evt_raised1'),
      k.tenantId,
      [{ resource: k.resource, parents: [], type: 'a.b', data: 1, idempotencyKey: undefined }],
    );
    expect(await distributorAt(rig, now).runTurn(k, 'w')).toMatchObject({ distributed: 1 });
    clock += 1_500;
    // The consumer's checkpoint: a token from before the event (still settling).
    const checkpoint = await pollStream(reader, k.tenantId, k.resource, start.sync);
    expect(checkpoint).toMatchObject({ status: 200, data: [] });
    // Six days on the stream is polled (it stays alive), the event read but not checkpointed.
    clock += 6 * DAY;
    expect(await pollStream(reader, k.tenantId, k.resource, checkpoint.sync)).toMatchObject({ data: [{ id: 'evt_raised1' }] });

    // retentionDays is raised to 14; two days later the consumer resumes from its checkpoint.
    clock += 2 * DAY;
    const raised: StreamDeps = { streams: rig.streams, retentionDays: 14, now };
    const resumed = await pollStream(raised, k.tenantId, k.resource, checkpoint.sync);
    expect(resumed).toMatchObject({ status: 412 });
  });
});

describe('gap markers written to a stream in the same millisecond', () => {
  it('are all kept: a marker for dropped events and one for expired events, in one turn on a stopped clock', async () => {
    let clock = Date.now();
    const now = () => clock;
    const k = { tenantId: 'ten_twogaps', resource: 'doc:twogaps' };
    // An event accepted eight days ago, never distributed: past the retention period.
    await publish(
      ingestAt(
        rig,
        () => clock - 8 * DAY,
        () => 'evt_twogaps1',
      ),
      k.tenantId,
      [{ resource: k.resource, parents: [], type: 'a.b', data: 1, idempotencyKey: undefined }],
    );
    // And three events dropped under a switch since lifted, counted for their marker.
    await rig.client.send(
      new UpdateCommand({
        TableName: rig.events,
        Key: { pk: `${k.tenantId}#${k.resource}`, sk: 'meta' },
        UpdateExpression: 'SET #dropped = :three',
        ExpressionAttributeNames: { '#dropped': 'switch_dropped' },
        ExpressionAttributeValues: { ':three': 3 },
      }),
    );
    const reader: StreamDeps = { streams: rig.streams, retentionDays: 7, now };
    const start = await pollStream(reader, k.tenantId, k.resource, undefined);
    expect(start.status).toBe(412);

    // One turn sends both markers; the clock does not move between them.
    clock += 10_000;
    await distributorAt(rig, now).runTurn(k, 'w');
    clock += 5_000;
    const page = await pollStream(reader, k.tenantId, k.resource, start.sync);
    if (page.status !== 200) throw new Error(`poll answered ${page.status}`);
    expect((page.data as Array<{ type: string; data: unknown }>).map((e) => [e.type, e.data])).toEqual([
      ['sluice.gap', { dropped: 3, reason: 'switch_drop' }],
      ['sluice.gap', { dropped: 1, reason: 'retention' }],
    ]);
  });

  it('are all kept when two containers send them for one object in the same millisecond of their clocks', async () => {
    // Successive turns of an object may run in two containers, whose clocks may be up to
    // 2 s apart: each container keeps its own stamps apart, not the other's.
    let clock = Date.now();
    const now = () => clock;
    const k = { tenantId: 'ten_twocontainers', resource: 'doc:twocontainers' };
    const owe = (dropped: number) =>
      rig.client.send(
        new UpdateCommand({
          TableName: rig.events,
          Key: { pk: `${k.tenantId}#${k.resource}`, sk: 'meta' },
          UpdateExpression: 'SET #dropped = :dropped',
          ExpressionAttributeNames: { '#dropped': 'switch_dropped' },
          ExpressionAttributeValues: { ':dropped': dropped },
        }),
      );
    const reader: StreamDeps = { streams: rig.streams, retentionDays: 7, now };
    const start = await pollStream(reader, k.tenantId, k.resource, undefined);

    // Three events dropped under a switch since lifted: one container's turn sends their
    // marker. Two more dropped under the next drop: another container's turn sends theirs,
    // its clock reading the same millisecond.
    clock += 10_000;
    await owe(3);
    await distributorAt(rig, now).runTurn(k, 'first');
    await owe(2);
    await distributorAt(rig, now).runTurn(k, 'second');

    // Both are in the stream (in the order of their ids: their clocks cannot tell which came first).
    clock += 5_000;
    const page = await pollStream(reader, k.tenantId, k.resource, start.sync);
    if (page.status !== 200) throw new Error(`poll answered ${page.status}`);
    const markers = (page.data as Array<{ type: string; data: { dropped: number } }>).map((e) => [e.type, e.data]);
    expect(markers).toHaveLength(2);
    expect(markers).toEqual(
      expect.arrayContaining([
        ['sluice.gap', { dropped: 3, reason: 'switch_drop' }],
        ['sluice.gap', { dropped: 2, reason: 'switch_drop' }],
      ]),
    );
  });
});
