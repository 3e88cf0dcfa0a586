/**
 * A webhook's replays are budgeted: each sends its window's deliveries to the deliver
 * queue every tenant's deliveries share, and reads them from the log first, so a tenant
 * replaying one window after another, within its API throttle, would fill the queue far
 * past what its endpoints take and hold up every other tenant's deliveries.
 */
import { describe, expect, it } from 'vitest';
import { DeliveryLog } from '../../functions/adapters/delivery-log.ts';
import { SendBudgets } from '../../functions/adapters/send-budgets.ts';
import { deliveryDeps } from '../../functions/app/runtime.ts';
import { MAX_REPLAY_DELIVERIES } from '../../functions/app/webhooks.ts';
import type { ApiError } from '../../functions/core/errors.ts';
import type { DeliveryMessage } from '../../functions/core/model.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { createTenant, createWebhook, publish } from '../support/api.ts';
import { deliveryFixture } from '../support/fixtures.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';
import { webhookService } from '../support/services.ts';

let sandbox: Sandbox;
let receiver: Receiver;
withSandbox({ canary: false }, (s, r) => {
  [sandbox, receiver] = [s, r];
});

/** Logs `count` deliveries of one event each for the webhook, as delivered a minute ago. */
async function logDeliveries(tenantId: string, webhookId: string, count: number): Promise<number> {
  const { deliveryLog } = deliveryDeps(sandbox.wiring, sandbox.notifier);
  const from = Date.now() - 60_000;
  for (let i = 0; i < count; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, count - i) }, (_, j) => {
        const n = i + j + 1;
        const message = { ...deliveryFixture(`rp${webhookId.slice(-6)}`, webhookId, n), tenantId };
        const at = new Date(from + n).toISOString();
        return deliveryLog.add(message, from + n, {
          id: `att_${n}`,
          delivery_id: message.deliveryId,
          attempt: 1,
          status_code: 200,
          duration_ms: 1,
          error: null,
          at,
        });
      }),
    );
  }
  return from;
}

/** How long one event of the bystander takes from its publish to its webhook. */
async function bystanderLatency(key: string): Promise<number> {
  const before = receiver.acceptedEvents('/bystander').length;
  const started = Date.now();
  await publish(sandbox, key, [{ resource: 'b:1', type: 'a.b', data: started }]);
  await receiver.waitFor(() => receiver.acceptedEvents('/bystander').length > before, 60_000);
  return Date.now() - started;
}

describe('a tenant replaying one window after another', () => {
  it('sends at most its webhook’s budget of deliveries, the rest refused with 429 and Retry-After, and another tenant’s deliveries keep their pace', async () => {
    const replayer = await createTenant(sandbox, 'replayer');
    const hook = await createWebhook(sandbox, replayer.key, { resource: 'r:1', url: `${receiver.url}/replayer` });
    const bystander = await createTenant(sandbox, 'bystander');
    await createWebhook(sandbox, bystander.key, { resource: 'b:1', url: `${receiver.url}/bystander` });
    // A fifth of the default budget (2,000 deliveries per the 40 s its endpoint takes them
    // in at 50 a second), in the same proportion: its deliveries go to the sandbox's own
    // deliver queue, which every tenant's deliveries share. The whole budget's 2,000 to
    // 4,000 deliveries, each handled on the thread the test's receiver answers on, held
    // the bystander's event up past the bound below on a loaded 2-core machine.
    const budget = { units: MAX_REPLAY_DELIVERIES / 5, windowMs: 8_000 };
    const webhooks = webhookService(sandbox, { service: { replayBudget: budget, maxReplayDeliveries: budget.units } });
    const from = await logDeliveries(replayer.id, hook.id, budget.units);
    const calm = await bystanderLatency(bystander.key);

    // 125 replays of the whole window, 5 at a time: 50,000 deliveries unbudgeted.
    const answers: unknown[] = [];
    for (let round = 0; round < 25; round++) {
      const window = { since: from - 1_000, until: undefined };
      answers.push(
        ...(await Promise.all(Array.from({ length: 5 }, () => webhooks.replay(replayer.id, hook.id, window).catch((e: unknown) => e)))),
      );
    }
    const storm = await bystanderLatency(bystander.key);

    const sent = answers.filter((a): a is number => typeof a === 'number').reduce((sum, n) => sum + n, 0);
    // A budget per window of 8 s: the calls may straddle two windows.
    expect(sent).toBeGreaterThanOrEqual(budget.units);
    expect(sent).toBeLessThanOrEqual(2 * budget.units);
    const refused = answers.filter((a) => typeof a !== 'number') as ApiError[];
    expect(refused.length).toBeGreaterThanOrEqual(123);
    for (const error of refused) {
      // The API answers it 429 with its Retry-After.
      expect(error.code).toBe('rate_limited');
      expect(error.status).toBe(429);
      expect(error.retryAfterSeconds).toBeGreaterThan(0);
    }
    // Unbudgeted, the bystander's event waited 27 s behind the 50,000 replayed deliveries (97 ms calm).
    expect(storm).toBeLessThan(calm + 5_000);
  }, 120_000);

  it('shares the budget among replays sent at once, gives back what a replay did not read, and has it again in the next window', async () => {
    const tenant = await createTenant(sandbox, 'replay-budget');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'rb:1', url: `${receiver.url}/replay-budget` });
    const other = await createWebhook(sandbox, tenant.key, { resource: 'rb:2', url: `${receiver.url}/replay-budget-2` });
    const from = await logDeliveries(tenant.id, hook.id, 3);
    await logDeliveries(tenant.id, other.id, 3);
    const sent: DeliveryMessage[] = [];
    const webhooks = webhookService(sandbox, {
      delivery: { queue: { send: async (messages: readonly unknown[]) => void sent.push(...(messages as DeliveryMessage[])) } },
      service: { replayBudget: { units: 4, windowMs: 3_000 } },
    });
    // Early in a window, so that the ten replays share one.
    await new Promise((resolve) => setTimeout(resolve, 3_000 - (Date.now() % 3_000) + 50));
    const window = { since: from - 1_000, until: undefined };

    const answers = await Promise.all(
      Array.from({ length: 10 }, () => webhooks.replay(tenant.id, hook.id, window).catch((e: unknown) => e)),
    );

    // The first takes 4, reads 3 and gives 1 back; the one left is not enough for the window.
    expect(answers.filter((a) => a === 3)).toHaveLength(1);
    expect(answers.filter((a) => a !== 3).every((a) => (a as { code?: string }).code === 'rate_limited')).toBe(true);
    expect(sent.flatMap((m) => m.events)).toHaveLength(3);
    // Another webhook's budget is its own.
    expect(await webhooks.replay(tenant.id, other.id, window)).toBe(3);
    // The next window has the whole budget again.
    await new Promise((resolve) => setTimeout(resolve, 3_000 - (Date.now() % 3_000) + 50));
    expect(await webhooks.replay(tenant.id, hook.id, window)).toBe(3);
  }, 30_000);

  it('gives back what a replay took when its log read failed, and sends a replay whose budget was not corrected', async () => {
    const tenant = await createTenant(sandbox, 'replay-fails');
    const hook = await createWebhook(sandbox, tenant.key, { resource: 'rf:1', url: `${receiver.url}/replay-fails` });
    const from = await logDeliveries(tenant.id, hook.id, 2);
    const failing = { logged: 1, adjust: 0 };
    class FailingLog extends DeliveryLog {
      override async logged(...args: Parameters<DeliveryLog['logged']>) {
        if (failing.logged-- > 0) throw new Error('ProvisionedThroughputExceededException');
        return super.logged(...args);
      }
    }
    class FailingBudgets extends SendBudgets {
      override async adjust(...args: Parameters<SendBudgets['adjust']>) {
        if (failing.adjust-- > 0) throw new Error('ProvisionedThroughputExceededException');
        return super.adjust(...args);
      }
    }
    const options = { client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable, retentionDays: 7 };
    const [deliveryLog, sendBudgets] = [new FailingLog(options), new FailingBudgets(options)];
    const sent: DeliveryMessage[] = [];
    const webhooks = webhookService(sandbox, {
      delivery: {
        deliveryLog,
        sendBudgets,
        queue: { send: async (messages: readonly unknown[]) => void sent.push(...(messages as DeliveryMessage[])) },
      },
      service: { replayBudget: { units: 4, windowMs: 10_000 } },
    });
    // Early in a window, so that the replays share one.
    await new Promise((resolve) => setTimeout(resolve, 10_000 - (Date.now() % 10_000) + 50));
    const window = { since: from - 1_000, until: undefined };

    // The read fails: nothing sent, and the budget not spent on it (its retry was refused
    // with 429 until the window's end).
    await expect(webhooks.replay(tenant.id, hook.id, window)).rejects.toThrow('ProvisionedThroughputExceededException');
    expect(await webhooks.replay(tenant.id, hook.id, window)).toBe(2);
    // The correction fails: the replay is sent all the same (it failed after its read),
    // and its whole take of 2 stays counted.
    failing.adjust = 1;
    expect(await webhooks.replay(tenant.id, hook.id, { since: from - 1_000, until: from + 2 })).toBe(1);
    expect(sent.flatMap((m) => m.events)).toHaveLength(3);
    await expect(webhooks.replay(tenant.id, hook.id, window)).rejects.toMatchObject({ code: 'rate_limited' });
  }, 30_000);
});
