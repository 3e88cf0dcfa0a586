/**
 * The first incident played long: one object written past its rate for an hour of
 * injected time, its queue at its cap the whole while, next to calm objects of its own
 * tenant and of another. Ingest, the distributor's turns and the reconciler run against
 * the embedded DynamoDB on one clock that moves a second a tick; doorbells are a list.
 * LONGRUN_STORM_S sets the storm's length (600 s by default; 7,200 was run once).
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { QueryCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { IdempotencyStore } from '../../functions/adapters/idempotency-store.ts';
import { QueueStore, slotItemKey } from '../../functions/adapters/queue-store.ts';
import { NO_SWITCHES } from '../../functions/adapters/switch-store.ts';
import { Distributor } from '../../functions/app/distributor.ts';
import { publish } from '../../functions/app/ingest.ts';
import { reconcile } from '../../functions/app/reconciler.ts';
import { buildConfig } from '../../functions/core/config.ts';
import type { DeliveredEvent, DeliveryMessage, ObjectKey, Webhook } from '../../functions/core/model.ts';
import { NO_LOGS } from '../../functions/core/telemetry.ts';
import { AlarmEvaluator } from '../../sandbox/alarms.ts';
import { createTables, type Emulators, startEmulators } from '../../sandbox/emulators.ts';
import { InMemoryMetrics } from '../../sandbox/metrics.ts';
import { webhookFixture } from '../support/fixtures.ts';

let emulators: Emulators;
let client: ReturnType<typeof documentClient>;
let eventsTable: string;

beforeAll(async () => {
  emulators = await startEmulators();
  const tables = await createTables(new DynamoDBClient({ ...emulators.dynamo }));
  eventsTable = tables.Events as string;
  client = documentClient(emulators.dynamo);
});

afterAll(async () => {
  await emulators?.stop();
});

const STORM_S = Number(process.env.LONGRUN_STORM_S ?? 600);
const CALM_S = 900;

describe('a hot object written past its rate for a long while', () => {
  it('stays at its cap, drains in seq order with nothing lost, never sticks its lease, and others keep moving; the alarms page and clear', async () => {
    const clock = { now: Date.parse('2026-12-01T00:00:00Z') };
    const now = () => clock.now;
    const config = buildConfig({ objectQueueCap: 400, objectRatePerSecond: 100, objectBurst: 200, turnMaxEvents: 50 });
    const metrics = new InMemoryMetrics(now);
    const alarms = new AlarmEvaluator(metrics, config, { now });
    const queues = new QueueStore({ client, tableName: eventsTable, retentionDays: 7 });
    const rings: ObjectKey[] = [];
    const doorbell = { ring: async (k: ObjectKey) => void rings.push(k) };
    let id = 0;
    const ingest = {
      queues,
      idempotency: new IdempotencyStore({ client, tableName: eventsTable, retentionDays: 7, ingestGraceMs: 60_000 }),
      doorbell,
      config,
      metrics,
      logger: NO_LOGS,
      now,
      newEventId: () => `evt_${String(++id).padStart(9, '0')}`,
    };
    const hooks: Record<string, Webhook> = {
      ten_hot: webhookFixture({ id: 'wh_hot', tenantId: 'ten_hot', resource: 'doc:hot' }),
      ten_calm: webhookFixture({ id: 'wh_calm', tenantId: 'ten_calm', resource: 'board:calm' }),
    };
    const sent: DeliveryMessage<DeliveredEvent>[] = [];
    const deliveredAt = new Map<string, number>();
    const distributor = new Distributor({
      queues,
      switches: NO_SWITCHES,
      subscriptions: { onResource: async (tenantId) => [hooks[tenantId] as Webhook] },
      deliveries: {
        send: async (messages) => {
          for (const m of messages as DeliveryMessage<DeliveredEvent>[]) {
            sent.push(m);
            for (const e of m.events) if (!deliveredAt.has(e.id)) deliveredAt.set(e.id, clock.now);
          }
        },
      },
      doorbell,
      config,
      metrics,
      logger: NO_LOGS,
      now,
      sleep: async (ms) => {
        clock.now += ms;
      },
    });
    const hot: ObjectKey = { tenantId: 'ten_hot', resource: 'doc:hot' };
    const calm: ObjectKey[] = [
      ...Array.from({ length: 3 }, (_, i) => ({ tenantId: 'ten_hot', resource: `note:${i}` })),
      ...Array.from({ length: 3 }, (_, i) => ({ tenantId: 'ten_calm', resource: `card:${i}` })),
    ];
    const acceptedHot: string[] = [];
    const calmSent = new Map<string, number>();
    let rejected = 0;
    let leaseHeld = 0;
    let peakDepth = 0;
    const outcomes = new Map<string, number>();
    const alarmLog: string[] = [];
    const states = new Map<string, string>();
    const samples: unknown[] = [];
    const started = clock.now;
    for (let second = 0; second < STORM_S + CALM_S; second++) {
      if (second < STORM_S) {
        // The flood: two requests of 100 events a second, past the rate of 100 and the cap.
        for (let r = 0; r < 2; r++) {
          const out = await publish(
            ingest,
            hot.tenantId,
            Array.from({ length: 100 }, (_, i) => ({
              resource: hot.resource,
              parents: [],
              type: 'doc.edited',
              data: i,
              idempotencyKey: undefined,
            })),
          );
          for (const e of out.results) {
            if (e.status === 'accepted') acceptedHot.push(e.id);
            else rejected++;
          }
        }
      }
      // The calm objects: one event each every 10 s, all the while.
      if (second % 10 === 0) {
        for (const k of calm) {
          const out = await publish(ingest, k.tenantId, [
            {
              resource: k.resource,
              parents: [k.tenantId === 'ten_hot' ? 'doc:hot' : 'board:calm'],
              type: 'x.y',
              data: second,
              idempotencyKey: undefined,
            },
          ]);
          for (const e of out.results) if (e.status === 'accepted') calmSent.set(e.id, clock.now);
        }
      }
      // The doorbells rung so far, one turn each (the FIFO queue's groups, one at a time).
      const due = rings.splice(0);
      const seen = new Set<string>();
      for (const k of due) {
        const group = `${k.tenantId}/${k.resource}`;
        if (seen.has(group)) continue;
        seen.add(group);
        const turn = await distributor.runTurn(k, `w${second}`);
        outcomes.set(turn.outcome, (outcomes.get(turn.outcome) ?? 0) + 1);
        if (turn.outcome === 'lease_held') leaseHeld++;
      }
      // Rings of groups already served this second wait for the next.
      for (const k of due)
        if (!rings.some((r) => r.resource === k.resource && r.tenantId === k.tenantId) && due.filter((d) => d === k).length > 1)
          rings.push(k);
      if (second % 60 === 59) {
        await reconcile({ queues, doorbell, switches: { list: async () => [] }, config, metrics, logger: NO_LOGS, now });
        for (const a of alarms.evaluate()) {
          if (states.get(a.name) !== a.state) alarmLog.push(`${Math.round((clock.now - started) / 1000)}s ${a.name} ${a.state}`);
          states.set(a.name, a.state);
        }
        const meta = await queues.readMeta(hot);
        samples.push({
          t: second + 1,
          depth: meta?.depth,
          seq: meta?.seq,
          lease: meta?.leaseUntil !== undefined ? meta.leaseUntil - clock.now : null,
        });
      }
      const meta = second % 10 === 0 ? await queues.readMeta(hot) : undefined;
      peakDepth = Math.max(peakDepth, meta?.depth ?? 0);
      clock.now += 1_000;
    }
    // What the hot object leaves in its partition (slots are kept until TTL deletes them).
    const partition = slotItemKey(hot, 1).pk;
    let items = 0;
    for (let start: Record<string, unknown> | undefined, first = true; first || start; first = false) {
      const page = await client.send(
        new QueryCommand({
          TableName: eventsTable,
          KeyConditionExpression: '#pk = :pk',
          ExpressionAttributeNames: { '#pk': 'pk' },
          ExpressionAttributeValues: { ':pk': partition },
          Select: 'COUNT',
          ExclusiveStartKey: start,
        }),
      );
      items += page.Count ?? 0;
      start = page.LastEvaluatedKey;
    }
    const hotEvents = sent.flatMap((m) => m.events).filter((e) => e.resource === hot.resource && e.type !== 'sluice.gap');
    const markers = sent.flatMap((m) => m.events).filter((e) => e.type === 'sluice.gap');
    const calmLatency = [...calmSent].map(([eid, at]) => (deliveredAt.get(eid) ?? Number.POSITIVE_INFINITY) - at);
    console.log(
      JSON.stringify({
        accepted: acceptedHot.length,
        rejected,
        delivered: hotEvents.length,
        markers: markers.length,
        peakDepth,
        outcomes: Object.fromEntries(outcomes),
        calmMaxLatencyMs: Math.max(...calmLatency),
        calm: calmSent.size,
        items,
        totals: {
          rejected: metrics.total('EventsRejected'),
          nearCap: metrics.total('ObjectQueueNearCap'),
          rerung: metrics.total('StuckObjectsRerung'),
          staleLeases: metrics.total('StaleLeasesCleared'),
          skipped: metrics.total('SlotsSkipped'),
          dropped: metrics.total('EventsDropped'),
        },
      }),
    );
    console.log(alarmLog.join('\n'));
    console.log(JSON.stringify(samples.filter((_, i) => i % 5 === 0)));

    expect(peakDepth).toBeLessThanOrEqual(400);
    expect(markers).toEqual([]);
    expect(hotEvents.map((e) => e.id)).toEqual(acceptedHot);
    expect(hotEvents.map((e) => e.seq)).toEqual(acceptedHot.map((_, i) => i + 1));
    expect(leaseHeld).toBe(0);
    expect(metrics.total('StaleLeasesCleared')).toBe(0);
    // Every calm event goes out within 2 s of its publish.
    expect(Math.max(...calmLatency)).toBeLessThan(2_000);
    expect((await queues.readMeta(hot))?.depth).toBe(0);
    // Paged while it lasted, cleared after.
    expect(alarmLog).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/events-rejected-or-dropped ALARM/),
        expect.stringMatching(/object-queue-near-cap ALARM/),
      ]),
    );
    expect(states.get('events-rejected-or-dropped')).toBe('OK');
    expect(states.get('object-queue-near-cap')).toBe('OK');
  }, 900_000);
});
