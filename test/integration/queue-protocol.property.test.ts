/**
 * A property-based test of the per-object queue protocol against the embedded
 * DynamoDB: random interleavings of ingests, turns, turns that crash after
 * committing a chunk, duplicated and out-of-order doorbells, stale holders trying
 * to write, clock jumps past lease expiry, and reconciler runs. The real ingest,
 * distributor and reconciler code runs; only the two queues around them are
 * simulated in memory so the test controls delivery order and duplication.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { IdempotencyStore } from '../../functions/adapters/idempotency-store.ts';
import { QueueStore, type QuietSnapshot } from '../../functions/adapters/queue-store.ts';
import { NO_SWITCHES } from '../../functions/adapters/switch-store.ts';
import { Distributor } from '../../functions/app/distributor.ts';
import { publish } from '../../functions/app/ingest.ts';
import { reconcile } from '../../functions/app/reconciler.ts';
import { buildConfig } from '../../functions/core/config.ts';
import { FencedOutError } from '../../functions/core/errors.ts';
import type { DeliveredEvent, ObjectKey, Webhook } from '../../functions/core/model.ts';
import { createTables, type Emulators, startEmulators } from '../../sandbox/emulators.ts';
import { webhookFixture } from '../support/fixtures.ts';
import {
  expectFirstSentInSeqOrder,
  expectOneEventPerSeq,
  expectOneSeqPerEvent,
  PROTOCOL_OBJECTS,
  PROTOCOL_SETTINGS,
  protocolDeps,
  quiesce,
} from '../support/queue-protocol.ts';

const CAP = PROTOCOL_SETTINGS.objectQueueCap;
const OBJECTS = PROTOCOL_OBJECTS;
const config = buildConfig(PROTOCOL_SETTINGS);
const everything: Webhook = webhookFixture({ id: 'wh_all' });

type Command =
  | { kind: 'ingest'; object: number; count: number }
  | { kind: 'turn'; object: number; pick: number; duplicate: boolean }
  | { kind: 'crashTurn'; object: number }
  | { kind: 'staleWrite'; object: number }
  | { kind: 'advance'; ms: number }
  | { kind: 'reconcile' };

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('ingest' as const), object: fc.nat(1), count: fc.integer({ min: 1, max: 6 }) }) },
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant('turn' as const), object: fc.nat(1), pick: fc.nat(3), duplicate: fc.boolean() }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('crashTurn' as const), object: fc.nat(1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('staleWrite' as const), object: fc.nat(1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 1, max: 8_000 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('reconcile' as const) }) },
);

let emulators: Emulators;
let store: QueueStore;
let idempotency: IdempotencyStore;
let run = 0;

beforeAll(async () => {
  emulators = await startEmulators();
  const tables = await createTables(new DynamoDBClient({ ...emulators.dynamo }));
  const client = documentClient(emulators.dynamo);
  store = new QueueStore({ client, tableName: tables.Events as string, retentionDays: 7 });
  idempotency = new IdempotencyStore({ client, tableName: tables.Events as string, retentionDays: 7, ingestGraceMs: 2_000 });
});

afterAll(async () => {
  await emulators?.stop();
});

async function execute(commands: readonly Command[]): Promise<void> {
  const tenantId = `ten_run${++run}`;
  const keys: ObjectKey[] = OBJECTS.map((resource) => ({ tenantId, resource }));
  // The simulated distribute queue: doorbells per object, in send order.
  type Ring = { token: string; quiet: boolean; snapshot?: QuietSnapshot };
  const doorbells = new Map<string, Ring[]>(OBJECTS.map((r) => [r, []]));
  let rings = 0;
  const doorbell = {
    // Every other quiet doorbell loses its snapshot, so quiet turns both read the meta item and trust the doorbell.
    ring: async (key: ObjectKey, token: string, options: { quiet?: boolean; snapshot?: QuietSnapshot } = {}) =>
      void doorbells
        .get(key.resource)
        ?.push({ token, quiet: options.quiet === true, ...(options.snapshot && ++rings % 2 === 0 && { snapshot: options.snapshot }) }),
  };
  const delivered: DeliveredEvent[] = [];
  let crashNextPublish = false;
  const deps = protocolDeps({ store, idempotency, config, doorbell, run, switches: async () => [] });
  const { now, advance } = deps;
  const distributor = new Distributor({
    queues: store,
    switches: NO_SWITCHES,
    subscriptions: { onResource: async () => [everything] },
    deliveries: {
      send: async (messages) => {
        if (crashNextPublish) {
          crashNextPublish = false;
          throw new Error('simulated crash between commit and publish');
        }
        for (const m of messages) delivered.push(...(m.events as DeliveredEvent[]));
      },
    },
    ...deps.turn,
  });
  const { ingest, reconciler } = deps;
  const accepted = new Map<string, string>(); // event id → resource

  const turn = async (object: number, pick: number, duplicate: boolean) => {
    const key = keys[object] as ObjectKey;
    const queue = doorbells.get(key.resource) as Ring[];
    if (queue.length === 0) return;
    const index = pick % queue.length;
    const [ring] = queue.splice(index, 1) as [Ring];
    try {
      // A doorbell an ingest rang with `quiet` may be served without a lease.
      await distributor.runTurn(key, `holder-${now()}-${Math.random()}`, {
        quiet: ring.quiet,
        ...(ring.snapshot && { snapshot: ring.snapshot }),
      });
    } catch {
      // The invocation failed: SQS would deliver this doorbell again.
      queue.unshift(ring);
      return;
    }
    if (duplicate) queue.push(ring);
  };

  for (const command of commands) {
    switch (command.kind) {
      case 'ingest': {
        const key = keys[command.object] as ObjectKey;
        const outcome = await publish(
          ingest,
          tenantId,
          Array.from({ length: command.count }, (_, i) => ({
            resource: key.resource,
            parents: [],
            type: 'p.t',
            data: i,
            idempotencyKey: undefined,
          })),
        );
        for (const r of outcome.results) if (r.status === 'accepted') accepted.set(r.id, key.resource);
        const meta = await store.readMeta(key);
        expect(meta?.depth ?? 0).toBeLessThanOrEqual(CAP);
        break;
      }
      case 'turn':
        await turn(command.object, command.pick, command.duplicate);
        break;
      case 'crashTurn':
        crashNextPublish = true;
        await turn(command.object, 0, false);
        crashNextPublish = false;
        break;
      case 'staleWrite': {
        const key = keys[command.object] as ObjectKey;
        const before = await store.readMeta(key);
        if (!before || before.fence < 1) break;
        const staleFence = before.fence - 1;
        await expect(
          store.commitChunk(key, staleFence, before.cursor, {
            cursor: before.cursor + 1,
            seq: before.seq + 1,
            consumed: 1,
            turn: { fromSlot: before.cursor + 1, toSlot: before.cursor + 1, firstSeq: before.seq + 1 },
          }),
        ).rejects.toBeInstanceOf(FencedOutError);
        await expect(store.finishTurn(key, staleFence, now())).rejects.toBeInstanceOf(FencedOutError);
        const after = await store.readMeta(key);
        expect(after).toEqual(before);
        break;
      }
      case 'advance':
        advance(command.ms);
        break;
      case 'reconcile':
        await reconcile(reconciler);
        break;
    }
  }

  // Quiesce: time passes (leases expire, abandoned slots age out), the reconciler
  // runs, and every doorbell is delivered, until nothing is scheduled.
  await quiesce({
    store,
    keys,
    step: config.stuckAfterMs + config.leaseMs + 1,
    advance,
    reconcile: () => reconcile(reconciler),
    ringing: () => [...doorbells.values()].some((q) => q.length > 0),
    serve: (o) => turn(o, 0, false),
  });

  // No object is left scheduled, or with events.
  for (const key of keys) {
    const meta = await store.readMeta(key);
    expect(meta?.depth ?? 0).toBe(0);
    expect(meta?.scheduled ?? false).toBe(false);
  }
  // Every accepted event was distributed, nothing else was, and each has one seq.
  for (const event of delivered) expect(accepted.has(event.id)).toBe(true);
  const seqOf = expectOneSeqPerEvent(delivered);
  expect(new Set(seqOf.keys())).toEqual(new Set(accepted.keys()));
  for (const resource of OBJECTS) {
    const ofObject = delivered.filter((e) => e.resource === resource);
    const count = [...accepted.values()].filter((r) => r === resource).length;
    // Seqs are 1..N with no gaps, one event each …
    const bySeq = expectOneEventPerSeq(ofObject);
    expect([...bySeq.keys()].sort((x, y) => x - y)).toEqual(Array.from({ length: count }, (_, i) => i + 1));
    // … and first distributed in increasing seq order (a republished chunk repeats, never reorders).
    expectFirstSentInSeqOrder(ofObject);
  }
}

describe('queue protocol (property-based, against dynalite)', () => {
  it('distributes every accepted event once per seq, in order, within the cap, and leaves nothing stranded', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(commandArb, { minLength: 5, maxLength: 30 }), async (commands) => {
        await execute(commands);
      }),
      { numRuns: 40, endOnFailure: true },
    );
  }, 120_000);
});
