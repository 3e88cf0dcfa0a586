/**
 * The first incident (SPEC §1): one object written as fast as a client can. Its
 * producer is told to slow down, its queue stays within the cap, every event it
 * had accepted is delivered, and other objects' events keep their latency.
 */
import { describe, expect, it } from 'vitest';
import { QueueStore } from '../../functions/adapters/queue-store.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createTenant, createWebhook, publish } from '../support/api.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

const CAP = 400;
let sandbox: Sandbox;
let receiver: Receiver;

withSandbox({ config: { objectQueueCap: CAP, objectRatePerSecond: 100, objectBurst: 200 } }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

describe('hot object', () => {
  it('keeps other objects flowing, bounds the hot queue, and loses nothing it accepted', async () => {
    const hotTenant = await createTenant(sandbox, 'hammer', { rate_per_second: 10_000, burst: 5_000 });
    const calmTenant = await createTenant(sandbox, 'calm');
    await createWebhook(sandbox, hotTenant.key, { resource: 'doc:hot', url: `${receiver.url}/hot` });
    await createWebhook(sandbox, calmTenant.key, { resource: 'board:calm', url: `${receiver.url}/calm` });
    await createWebhook(sandbox, hotTenant.key, { resource: 'board:neighbour', url: `${receiver.url}/neighbour` });

    // Others: ten objects of another tenant and two of the hot tenant itself, one event each every 100 ms.
    const sentAt = new Map<string, number>();
    let running = true;
    const others = (async () => {
      for (let tick = 0; running; tick++) {
        const started = Date.now();
        await Promise.all([
          publish(
            sandbox,
            calmTenant.key,
            Array.from({ length: 10 }, (_, i) => ({ resource: `card:${i}`, parents: ['board:calm'], type: 'card.moved', data: tick })),
          ).then((r) => {
            for (const e of r.body.events) if (e.status === 'accepted') sentAt.set(e.id, Date.now());
          }),
          publish(
            sandbox,
            hotTenant.key,
            Array.from({ length: 2 }, (_, i) => ({ resource: `note:${i}`, parents: ['board:neighbour'], type: 'note.edited', data: tick })),
          ).then((r) => {
            for (const e of r.body.events) if (e.status === 'accepted') sentAt.set(e.id, Date.now());
          }),
        ]);
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, 100 - (Date.now() - started))));
      }
    })();
    const latencies = (from: number, to: number) =>
      receiver.received
        .filter((d) => (d.path === '/calm' || d.path === '/neighbour') && d.at >= from && d.at < to)
        .flatMap((d) => d.json.events.filter((e) => sentAt.has(e.id)).map((e) => d.at - (sentAt.get(e.id) as number)));

    await new Promise((resolve) => setTimeout(resolve, 3_500));
    const stormStart = Date.now();

    // The storm: four writers, 50 events a request, as fast as answers come back.
    const queues = new QueueStore({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.eventsTable, retentionDays: 7 });
    const hotKey = { tenantId: hotTenant.id, resource: 'doc:hot' };
    const acceptedHot = new Set<string>();
    let rejectedHot = 0;
    let got429 = 0;
    let peakDepth = 0;
    const stormEnd = stormStart + 4_000;
    const writers = Array.from({ length: 4 }, async () => {
      while (Date.now() < stormEnd) {
        const response = await publish(
          sandbox,
          hotTenant.key,
          Array.from({ length: 50 }, (_, i) => ({ resource: 'doc:hot', type: 'doc.edited', data: i })),
        );
        if (response.status === 429) {
          got429++;
          expect(Number(response.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
        }
        for (const e of response.body.events) {
          if (e.status === 'accepted') acceptedHot.add(e.id);
          else rejectedHot++;
        }
      }
    });
    const sampler = (async () => {
      while (Date.now() < stormEnd) {
        peakDepth = Math.max(peakDepth, (await queues.readMeta(hotKey))?.depth ?? 0);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    await Promise.all([...writers, sampler]);
    running = false;
    await others;

    const before = latencies(stormStart - 3_000, stormStart);
    const during = latencies(stormStart + 500, stormEnd);
    expect(before.length).toBeGreaterThanOrEqual(5);
    expect(during.length).toBeGreaterThanOrEqual(10);
    // Generous bound: the tight figure is the benchmark's (npm run bench -- hot-object).
    expect(percentile(during, 90)).toBeLessThan(3 * percentile(before, 90) + 300);

    expect(peakDepth).toBeLessThanOrEqual(CAP);
    expect(rejectedHot).toBeGreaterThan(0);
    expect(got429).toBeGreaterThan(0);
    expect(sandbox.metrics.total('EventsRejected', { reason: 'rate_limited' })).toBe(rejectedHot);

    // Every hot event that was accepted arrives, numbered 1..N in order.
    await receiver.waitFor(() => receiver.events('/hot').length >= acceptedHot.size, 20_000);
    const hotEvents = receiver.events('/hot');
    expect(new Set(hotEvents.map((e) => e.id))).toEqual(acceptedHot);
    expect(hotEvents.map((e) => e.seq)).toEqual(Array.from({ length: acceptedHot.size }, (_, i) => i + 1));
  }, 60_000);
});
