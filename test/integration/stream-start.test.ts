/**
 * A stream collects from the moment its first poll is answered (SPEC §3 Event
 * streams), even while a distributor turn that began before it is still draining
 * the stream's resource: the events that turn distributes after the answer are in
 * the stream. And the stream exists for the very next read, the consumer's poll
 * with its token or a distributor's lookup, whichever replica DynamoDB asks, and
 * after a first poll that failed halfway, for the poll tried again.
 */
import { describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { StreamStore } from '../../functions/adapters/stream-store.ts';
import { SubscriptionCache } from '../../functions/adapters/subscription-cache.ts';
import { publish } from '../../functions/app/ingest.ts';
import { pollStream, STREAM_SETTLE_MS, type StreamDeps } from '../../functions/app/streams.ts';
import type { DeliveredEvent, Subscriber } from '../../functions/core/model.ts';
import type { Switch } from '../../functions/core/switches.ts';
import { webhookFixture } from '../support/fixtures.ts';
import { distributorAt, ingestAt, streamRig } from '../support/streams.ts';

const rig = streamRig();

/** The distributors' lookups, through the cache they use in AWS: `webhooks` on a resource, and the streams the rig keeps. */
function lookupCache(webhooks: (resource: string) => Subscriber[] = () => []) {
  return new SubscriptionCache({
    client: rig.client,
    controlTable: rig.control,
    lookups: { onResource: async (_t, resource) => webhooks(resource), streamExpiry: (t, r) => rig.streams.streamExpiry(t, r) },
  });
}

/** A deliveries port whose first send starts a stream on `resource` (its first poll answered), as a consumer would meanwhile. */
function startingAStream(reader: StreamDeps, tenantId: string, resource: string, tick: (ms: number) => void) {
  let start: Awaited<ReturnType<typeof pollStream>> | undefined;
  return {
    send: async () => {
      if (start) return;
      tick(10);
      start = await pollStream(reader, tenantId, resource, undefined);
      tick(10);
    },
    started: () => start,
  };
}

describe('a stream started while its resource is being drained', () => {
  it('gets every event the running turn distributes after the first poll is answered', async () => {
    let clock = Date.now();
    const now = () => clock;
    const tenantId = 'ten_start';
    const child = { tenantId, resource: 'task:9' };
    const reader: StreamDeps = { streams: rig.streams, retentionDays: 7, now };
    let id = 0;
    // 250 events on a child of project:9: a turn of three chunks (100, 100, 50).
    for (let batch = 0; batch < 3; batch++) {
      await publish(
        ingestAt(rig, now, () => `evt_start${++id}`),
        tenantId,
        Array.from({ length: batch === 2 ? 50 : 100 }, (_, i) => ({
          resource: child.resource,
          parents: ['project:9'],
          type: 'a.b',
          data: { i },
          idempotencyKey: undefined,
        })),
      );
      clock += 2_000;
    }

    // After the turn published its first chunk, a consumer starts a stream on the parent.
    const stream = startingAStream(reader, tenantId, 'project:9', (ms) => {
      clock += ms;
    });
    const distributor = distributorAt(rig, now, { deliveries: stream, lookupCache: lookupCache() });
    expect(await distributor.runTurn(child, 'w')).toMatchObject({ outcome: 'idle', distributed: 250 });
    const start = stream.started();
    expect(start?.status).toBe(412);

    // Everything distributed after that answer is in the stream: seq 101 to 250.
    clock += STREAM_SETTLE_MS + 1;
    const page1 = await pollStream(reader, tenantId, 'project:9', start?.sync);
    const page2 = page1.status === 200 ? await pollStream(reader, tenantId, 'project:9', page1.sync) : page1;
    const events = [page1, page2].flatMap((page) => (page.status === 200 ? (page.data as DeliveredEvent[]) : []));
    expect(events.map((e) => e.seq)).toEqual(Array.from({ length: 150 }, (_, i) => i + 101));
  });
});

describe('a stream started while a turn sends the gap marker of a lifted drop', () => {
  it('gets the events the turn distributes after it: the turn looks its subscribers up again after the marker', async () => {
    let clock = Date.now();
    const now = () => clock;
    const tenantId = 'ten_start_marker';
    const child = { tenantId, resource: 'task:7' };
    const reader: StreamDeps = { streams: rig.streams, retentionDays: 7, now };
    let id = 0;
    const events = (n: number) =>
      Array.from({ length: n }, (_, i) => ({
        resource: child.resource,
        parents: ['project:7'],
        type: 'a.b',
        data: { i },
        idempotencyKey: undefined,
      }));
    // A webhook on the parent: the dropped events' marker goes to it too, so the turn that
    // sends the marker looks the parent up (no stream yet) before the first chunk.
    const hook = webhookFixture({ id: 'wh_marker', tenantId, resource: 'project:7' });
    const webhooks = (resource: string) => (resource === 'project:7' ? [hook] : []);
    // Two events dropped under a drop on the object (their seqs used up, a marker owed).
    const drop: Switch = {
      id: 'sw_marker',
      scope: 'resource',
      tenant: tenantId,
      target: child.resource,
      action: 'drop',
      reason: '',
      created_at: '',
    };
    await publish(
      ingestAt(rig, now, () => `evt_marker${++id}`),
      tenantId,
      events(2),
    );
    const dropping = distributorAt(rig, now, {
      switches: { current: async () => [drop], refresh: async () => [drop] },
      lookupCache: lookupCache(webhooks),
    });
    expect(await dropping.runTurn(child, 'drop')).toMatchObject({ outcome: 'idle' });
    clock += 2_000;

    // The drop is lifted; three more events. The next turn sends the marker first, and
    // while it does, a consumer starts a stream on the parent.
    await publish(
      ingestAt(rig, now, () => `evt_marker${++id}`),
      tenantId,
      events(3),
    );
    const stream = startingAStream(reader, tenantId, 'project:7', (ms) => {
      clock += ms;
    });
    const distributor = distributorAt(rig, now, { deliveries: stream, lookupCache: lookupCache(webhooks) });
    await distributor.runTurn(child, 'lifted');
    const start = stream.started();
    expect(start?.status).toBe(412);
    clock += STREAM_SETTLE_MS + 1;
    const page = await pollStream(reader, tenantId, 'project:7', start?.sync);
    const streamed = page.status === 200 ? (page.data as DeliveredEvent[]) : [];
    expect(streamed.filter((e) => e.type !== 'sluice.gap').map((e) => e.seq)).toEqual([3, 4, 5]);
  });
});

describe('a stream just started, read by DynamoDB replicas that lag', () => {
  /**
   * A client whose eventually consistent reads of stream records come from a replica
   * that has not seen the first poll's write yet (DynamoDB's replicas usually catch up
   * within a second); strongly consistent reads go to the emulator.
   */
  function laggingClient() {
    const c = documentClient(rig.emulators.dynamo);
    c.middlewareStack.add(
      (next) => async (args) => {
        const input = args.input as { Key?: { pk?: unknown }; ConsistentRead?: boolean; UpdateExpression?: unknown };
        const isGet = input.Key !== undefined && input.UpdateExpression === undefined;
        if (isGet && String(input.Key?.pk).startsWith('stream#') && input.ConsistentRead !== true) {
          return { output: { $metadata: {} }, response: {} } as Awaited<ReturnType<typeof next>>;
        }
        return next(args);
      },
      { step: 'initialize', name: 'laggingReplica' },
    );
    return c;
  }

  it('serves the poll right after the 412, and the distributor appends to it', async () => {
    let clock = Date.now();
    const now = () => clock;
    const lagging = laggingClient();
    const store = new StreamStore({ client: lagging, controlTable: rig.control, eventsTable: rig.events, retentionDays: 7 });
    const tenantId = 'ten_lag';
    const reader: StreamDeps = { streams: store, retentionDays: 7, now };
    const start = await pollStream(reader, tenantId, 'doc:lag', undefined);
    expect(start.status).toBe(412);

    await publish(
      ingestAt(rig, now, () => 'evt_lag1'),
      tenantId,
      [{ resource: 'doc:lag', parents: [], type: 'a.b', data: 1, idempotencyKey: undefined }],
    );
    const distributor = distributorAt(rig, now, {
      streams: store,
      lookupCache: new SubscriptionCache({
        client: lagging,
        controlTable: rig.control,
        lookups: { onResource: async () => [], streamExpiry: (t, r) => store.streamExpiry(t, r) },
      }),
    });
    expect(await distributor.runTurn({ tenantId, resource: 'doc:lag' }, 'w')).toMatchObject({ distributed: 1 });

    clock += STREAM_SETTLE_MS + 1;
    const page = await pollStream(reader, tenantId, 'doc:lag', start.sync);
    expect(page).toMatchObject({ status: 200, data: [{ id: 'evt_lag1', seq: 1 }] });
  });
});

describe('a stream whose first poll failed after creating it', () => {
  it('is announced to distributors by the poll that is tried again, so they append to it at once', async () => {
    let clock = Date.now();
    const now = () => clock;
    const tenantId = 'ten_retry';
    const k = { tenantId, resource: 'doc:retry' };
    // A client whose first bump of the subscriptions version fails, as DynamoDB erring on that one write would.
    const flaky = documentClient(rig.emulators.dynamo);
    let bumps = 0;
    flaky.middlewareStack.add(
      (next) => async (args) => {
        const input = args.input as { Key?: { sk?: string } };
        if (input.Key?.sk === 'subscriptions' && ++bumps === 1) throw new Error('InternalServerError');
        return next(args);
      },
      { step: 'initialize', name: 'failFirstBump' },
    );
    const store = new StreamStore({ client: flaky, controlTable: rig.control, eventsTable: rig.events, retentionDays: 7 });
    const reader: StreamDeps = { streams: store, retentionDays: 7, now };
    const accept = (n: number) =>
      publish(
        ingestAt(rig, now, () => `evt_retry${n}`),
        tenantId,
        [{ resource: k.resource, parents: [], type: 'a.b', data: n, idempotencyKey: undefined }],
      );
    const distributor = distributorAt(rig, now, {
      streams: store,
      lookupCache: new SubscriptionCache({
        client: rig.client,
        controlTable: rig.control,
        lookups: { onResource: async () => [], streamExpiry: (t, r) => store.streamExpiry(t, r) },
      }),
    });
    // Before any stream: the distributor learns (and keeps) that there is none.
    await accept(1);
    expect(await distributor.runTurn(k, 'w')).toMatchObject({ distributed: 1 });

    // The first poll creates the stream, then fails to tell the distributors; the consumer tries again.
    await expect(pollStream(reader, tenantId, k.resource, undefined)).rejects.toThrow('InternalServerError');
    clock += 1_000;
    const start = await pollStream(reader, tenantId, k.resource, undefined);
    expect(start.status).toBe(412);

    clock += 1_000;
    await accept(2);
    expect(await distributor.runTurn(k, 'w')).toMatchObject({ distributed: 1 });
    clock += STREAM_SETTLE_MS + 1;
    const page = await pollStream(reader, tenantId, k.resource, start.sync);
    expect(page).toMatchObject({ status: 200, data: [{ id: 'evt_retry2', seq: 2 }] });
  });
});
