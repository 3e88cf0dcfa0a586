/**
 * The delivery function played over days of injected time: its deliver queue simulated
 * as a list of messages due on one clock, its tables and the endpoint real (the
 * sandbox's and a receiver's). How the long-run tests replay the failing-endpoint incident.
 */
import { QueryCommand } from '@aws-sdk/lib-dynamodb';
import type { DeliveryDeps } from '../../functions/app/delivery/deps.ts';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import { deliveryDeps } from '../../functions/app/runtime.ts';
import type { SluiceConfig } from '../../functions/core/config.ts';
import type { DeliverQueueMessage, DeliveryMessage } from '../../functions/core/model.ts';
import { CONTROL_PK } from '../../functions/definitions/tables.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createTenant, createWebhook } from './api.ts';
import { deliveredEventFixture } from './fixtures.ts';
import type { Answer, Receiver } from './receiver.ts';
import { webhookService } from './services.ts';

export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;

/** The deliver queue, as SQS delays would run it: each message due at its time on the injected clock. */
function simulatedQueue(clock: { now: number }) {
  const due: Array<{ at: number; message: DeliverQueueMessage }> = [];
  let sends = 0;
  return {
    due,
    sends: () => sends,
    port: {
      send: async (messages: readonly DeliverQueueMessage[], delaySeconds = 0) => {
        for (const message of messages) due.push({ at: clock.now + delaySeconds * 1000, message });
        sends += messages.length;
      },
    },
    next(until: number): DeliverQueueMessage | undefined {
      let best = -1;
      for (let i = 0; i < due.length; i++)
        if ((due[i]?.at ?? 0) <= until && (best < 0 || (due[i]?.at ?? 0) < (due[best]?.at ?? 0))) best = i;
      if (best < 0) return undefined;
      const [item] = due.splice(best, 1);
      clock.now = Math.max(clock.now, item?.at ?? 0);
      return item?.message;
    },
  };
}

async function itemsOf(sandbox: Sandbox, pk: string, now: number): Promise<{ all: number; live: number }> {
  const { Items = [] } = await sandbox.wiring.dynamo.send(
    new QueryCommand({
      TableName: sandbox.wiring.controlTable,
      KeyConditionExpression: '#pk = :pk',
      ExpressionAttributeNames: { '#pk': 'pk' },
      ExpressionAttributeValues: { ':pk': pk },
    }),
  );
  return { all: Items.length, live: Items.filter((i) => Number(i.expires_at_ms ?? Number.POSITIVE_INFINITY) > now).length };
}

export interface Run {
  readonly name: string;
  readonly config?: Partial<SluiceConfig>;
  /** How the endpoint comes back: its next probe succeeds, or its owner re-enables it (a disabled webhook gets no probes). */
  readonly recovery: 'probe' | 'owner' | 'none';
  /** How the endpoint answers while it fails (default 500 to everything). */
  readonly answer?: Answer;
  readonly failFor: number;
  readonly every: number;
}

export async function play(sandbox: Sandbox, receiver: Receiver, run: Run) {
  const tenant = await createTenant(sandbox, run.name);
  const path = `/${run.name}`;
  const hook = await createWebhook(sandbox, tenant.key, { resource: 'lr:0', url: `${receiver.url}${path}` });
  receiver.answer(path, run.answer ?? 500);
  const start = Date.now();
  const clock = { now: start };
  const queue = simulatedQueue(clock);
  const base = deliveryDeps(sandbox.wiring, sandbox.notifier);
  const deps: DeliveryDeps = {
    ...base,
    config: { ...base.config, ...run.config },
    now: () => clock.now,
    queue: queue.port,
    switches: { current: async () => [], refresh: async () => [] },
  };
  let seq = 0;
  let nextEventAt = start;
  const hourly: Array<{ hour: number; queued: number; sends: number; probes: number; held: number }> = [];
  let lastSends = 0;
  let lastProbes = 0;
  const probes = () => receiver.probes(path).length;
  const failHours = run.failFor / HOUR;
  for (let hour = 1; hour <= failHours + 3; hour++) {
    const until = start + hour * HOUR;
    if (hour === failHours + 1 && run.recovery !== 'none') {
      receiver.answer(path, 200);
      if (run.recovery === 'owner') {
        const service = webhookService(sandbox, { delivery: deps, service: { now: () => clock.now } });
        await service.update(tenant.id, hook.id, { status: 'active' });
      }
    }
    for (;;) {
      if (nextEventAt <= until && nextEventAt < start + run.failFor) {
        const due = queue.due.reduce((min, d) => Math.min(min, d.at), Number.POSITIVE_INFINITY);
        if (nextEventAt <= due) {
          clock.now = Math.max(clock.now, nextEventAt);
          seq += 1;
          const message: DeliveryMessage = {
            deliveryId: `msg_lr${seq}`,
            tenantId: tenant.id,
            webhookId: hook.id,
            events: [
              deliveredEventFixture({
                id: `evt_lr${seq}`,
                seq,
                resource: 'lr:1',
                parents: ['lr:0'],
                data: seq,
                created_at: new Date(clock.now).toISOString(),
              }),
            ],
            attempt: 1,
          };
          nextEventAt += run.every;
          await handleDeliverMessage(deps, message);
          continue;
        }
      }
      const message = queue.next(until);
      if (!message) break;
      await handleDeliverMessage(deps, message);
    }
    clock.now = Math.max(clock.now, until);
    const webhook = await deps.webhooks.get(tenant.id, hook.id);
    hourly.push({
      hour,
      queued: queue.due.length,
      sends: queue.sends() - lastSends,
      probes: probes() - lastProbes,
      held: webhook?.heldCount ?? -1,
    });
    lastSends = queue.sends();
    lastProbes = probes();
    if (run.recovery === 'none') console.log(run.name, JSON.stringify(hourly.at(-1)), JSON.stringify(webhook?.health.state));
    if (hour === failHours) {
      const items: Record<string, unknown> = {};
      for (const [kind, prefix] of Object.entries(CONTROL_PK).filter(([, p]) => p.endsWith('#') && p !== 'tenant#' && p !== 'apikey#')) {
        items[kind] = await itemsOf(sandbox, `${prefix}${hook.id}`, clock.now);
      }
      console.log(run.name, 'items before recovery', JSON.stringify(items), JSON.stringify(webhook?.health));
    }
  }
  const failing = hourly.filter((h) => h.hour <= failHours);
  const events = receiver.acceptedEvents(path).filter((e) => e.type !== 'webhook.ping');
  const delivered = events.filter((e) => e.type !== 'sluice.gap');
  const markers = events.filter((e) => e.type === 'sluice.gap').map((m) => m.data as { dropped: number; reason: string });
  const summary = {
    deliveries: seq,
    delivered: delivered.length,
    firstDelivered: delivered[0]?.seq,
    markers,
    maxQueued: Math.max(...failing.map((h) => h.queued)),
    maxSendsPerHourAfterDay1: Math.max(...failing.slice(24).map((h) => h.sends)),
    maxProbesPerHourAfterDay1: Math.max(...failing.slice(24).map((h) => h.probes)),
    heldAt: { day1: failing[23]?.held, day3: failing[3 * 24 - 1]?.held, day7: failing[7 * 24 - 1]?.held, end: failing.at(-1)?.held },
    after: hourly.slice(-3),
  };
  console.log(run.name, JSON.stringify(summary));
  return { deps, tenant, hook, queue, failing, delivered, markers, seq, start };
}
