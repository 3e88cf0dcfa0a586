/**
 * A tenant switch rings the tenant's listed objects (a drop set, a lift): in a flood of
 * new objects, the incident the switch is for, they are hundreds of thousands. The rings
 * read only the tenant's own objects, and stop on time: what is left is the reconciler's.
 */
import { describe, expect, it } from 'vitest';
import { documentClient } from '../../functions/adapters/aws.ts';
import { QueueStore } from '../../functions/adapters/queue-store.ts';
import { publish as publishEvents } from '../../functions/app/ingest.ts';
import { apiServices } from '../../functions/app/runtime.ts';
import { liftSwitch, type SwitchServiceDeps, setSwitch } from '../../functions/app/switches.ts';
import { SCHEDULE_INDEX, SCHEDULE_SHARDS } from '../../functions/definitions/tables.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createTenant, createWebhook, publish } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;
// The reconciler runs only when a test runs it; an object is stuck a second after its last turn.
withSandbox({ canary: false, config: { switchCacheMs: 500, stuckAfterMs: 1_000, reconcileIntervalSeconds: 3_600 } }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

const settle = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Publishes one event on each of `count` resources, ten to a request. */
async function publishOnEach(key: string, count: number, resource: (i: number) => string, parent?: string): Promise<void> {
  for (let at = 0; at < count; at += 10) {
    const events = Array.from({ length: Math.min(10, count - at) }, (_, i) => ({
      resource: resource(at + i),
      ...(parent && { parents: [parent] }),
      type: 'a.b',
      data: at + i,
    }));
    const answer = await publish(sandbox, key, events);
    if (answer.status !== 202) throw new Error(`publish failed: ${JSON.stringify(answer.body)}`);
  }
}

describe("a tenant switch's rings", () => {
  it("read only the tenant's own listed objects, however many other tenants list", async () => {
    const busy = await createTenant(sandbox, 'rings-busy');
    const quiet = await createTenant(sandbox, 'rings-quiet');
    await publishOnEach(busy.key, 60, (i) => `busy:${i}`);
    await publishOnEach(quiet.key, 2, (i) => `quiet:${i}`);
    // The switches' service on a client that counts the index entries its queries answer.
    let listed = 0;
    const counting = documentClient({ ...sandbox.emulators.dynamo });
    counting.middlewareStack.add(
      (next) => async (args) => {
        const result = await next(args);
        if ((args.input as { IndexName?: string }).IndexName === SCHEDULE_INDEX) {
          listed += ((result.output as { Items?: unknown[] }).Items ?? []).length;
        }
        return result;
      },
      { step: 'initialize', name: 'countListed' },
    );
    try {
      const services = apiServices({ ...sandbox.wiring, dynamo: counting }, {} as never, sandbox.notifier).switches;
      const pause = await setSwitch(services, { scope: 'tenant', tenant: quiet.id, target: undefined, action: 'pause', reason: '' });
      await liftSwitch(services, pause.id);
      // The quiet tenant's two, where every listed object was read (62 and more) and all but two thrown away.
      expect(listed).toBe(2);
    } finally {
      counting.destroy();
    }
  });

  it("of a tenant whose id begins another's leave the other's objects alone", async () => {
    const queues = new QueueStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.eventsTable, retentionDays: 7 });
    const ingest = apiServices(sandbox.wiring, {} as never, sandbox.notifier).ingest;
    await publishEvents(ingest, 'ten_prefix', [{ resource: 'p:1', parents: [], type: 'a.b', data: 1, idempotencyKey: undefined }]);
    await publishEvents(ingest, 'ten_prefixed', [{ resource: 'p:2', parents: [], type: 'a.b', data: 2, idempotencyKey: undefined }]);
    const found: string[] = [];
    for (let shard = 0; shard < SCHEDULE_SHARDS; shard++) {
      for await (const { keys } of queues.listedPages(shard, undefined, 'ten_prefix')) {
        found.push(...keys.map((k) => `${k.tenantId} ${k.resource}`));
      }
    }
    expect(found).toEqual(['ten_prefix p:1']);
  });

  it("answer on time when the tenant's objects take long to read, and the reconciler wakes those left", async () => {
    const tenant = await createTenant(sandbox, 'rings-slow');
    await createWebhook(sandbox, tenant.key, { resource: 'slow:group', url: `${receiver.url}/rings-slow` });
    const services = apiServices(sandbox.wiring, {} as never, sandbox.notifier).switches;
    const pause = await setSwitch(services, { scope: 'tenant', tenant: tenant.id, target: undefined, action: 'pause', reason: '' });
    await settle(700);
    await publishOnEach(tenant.key, 30, (i) => `slow:${i}`, 'slow:group');
    // Every object's turn found it paused.
    await settle(1_500);
    expect(receiver.acceptedEvents('/rings-slow')).toHaveLength(0);

    // The lift's reads of the meta items take 6 s each, as a throttled DynamoDB's may in a
    // flood of objects; its rings have 1 s.
    let reads = 0;
    const slowReads = new Proxy(services.queues, {
      get(target, name) {
        const value = Reflect.get(target, name, target);
        if (typeof value !== 'function') return value;
        if (name !== 'readMetas') return value.bind(target);
        return async (...args: unknown[]) => {
          reads++;
          await settle(6_000);
          return value.apply(target, args);
        };
      },
    });
    const slow: SwitchServiceDeps = { ...services, queues: slowReads };
    const started = Date.now();
    const budget = () => 1_000 - (Date.now() - started);
    await liftSwitch(slow, pause.id, budget);
    expect(reads).toBeGreaterThan(0);
    // Answered while the reads went on, where it waited for them (6 s and more).
    expect(Date.now() - started).toBeLessThan(5_000);
    // The reads that ended after the time was up rang nothing.
    await settle(6_000);
    expect(receiver.acceptedEvents('/rings-slow')).toHaveLength(0);

    // The reconciler's next run finds them stuck, no pause stopping them, and rings them.
    await sandbox.reconcile();
    await receiver.waitFor(() => receiver.acceptedEvents('/rings-slow').length === 30, 20_000);
  }, 60_000);
});
