/**
 * A probe or release chain lost with no delivery coming to notice it (a purged deliver
 * queue, a send that failed after its state was saved): the reconciler sends a check of
 * every webhook `by_chain` lists, and the delivery function starts the chain again. Real
 * DynamoDB index, real deliver queue, real receiver; only the clocks of the reconciler's
 * run and of the check are moved past CHAIN_LOST_AFTER_MS.
 */
import { GetQueueAttributesCommand, PurgeQueueCommand } from '@aws-sdk/client-sqs';
import { UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { describe, expect, it } from 'vitest';
import { sqsClient } from '../../functions/adapters/aws.ts';
import { chainShard, chainShardKey, WatchedWebhooks } from '../../functions/adapters/webhook-store.ts';
import { CHAIN_LOST_AFTER_MS } from '../../functions/app/delivery/chains.ts';
import { handleDeliverMessage } from '../../functions/app/delivery.ts';
import { RING_MARGIN_MS, reconcile } from '../../functions/app/reconciler.ts';
import { deliveryDeps, reconcilerDeps } from '../../functions/app/runtime.ts';
import { shardNumber } from '../../functions/core/keys.ts';
import type { CheckMessage, DeliverQueueMessage, Webhook } from '../../functions/core/model.ts';
import type { Switch } from '../../functions/core/switches.ts';
import { scheduleSeconds } from '../../functions/definitions/environment.ts';
import { DELIVER_QUEUE } from '../../functions/definitions/queues.ts';
import { CHAIN_SHARDS, tenantPk } from '../../functions/definitions/tables.ts';
import type { Sandbox } from '../../sandbox/sandbox.ts';
import { call, createTenant, createWebhook, publish } from '../support/api.ts';
import { resourceDeliveryFixture } from '../support/fixtures.ts';
import { holdDelivery } from '../support/held.ts';
import type { Receiver } from '../support/receiver.ts';
import { withSandbox } from '../support/sandbox.ts';

let sandbox: Sandbox;
let receiver: Receiver;

withSandbox(
  {
    canary: false,
    // A quick quarantine and probe: two failures quarantine, a probe every 2 s. The
    // reconciler runs when a test says (an hour apart on its own): a scheduled run's
    // checks, at the real time, would race the ones these tests send.
    config: { quarantineAfterFailures: 2, probeIntervalMinSeconds: 2, probeIntervalMaxSeconds: 2, reconcileIntervalSeconds: 3_600 },
  },
  (s, r) => {
    [sandbox, receiver] = [s, r];
  },
);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Delivery deps `offsetMs` from now, sending to the sandbox's deliver queue, or to `sent` when given. */
function deliveryAt(offsetMs: number, sent?: DeliverQueueMessage[]) {
  const deps = deliveryDeps(sandbox.wiring, sandbox.notifier);
  return {
    ...deps,
    now: () => Date.now() + offsetMs,
    ...(sent && { queue: { send: async (messages: readonly DeliverQueueMessage[]) => void sent.push(...messages) } }),
  };
}

/** Delivery deps, sending to `sent`, under a pause switch on the webhook. */
function pausedAt(tenantId: string, webhookId: string, sent: DeliverQueueMessage[]) {
  const pause: Switch = {
    id: `sw_${webhookId}`,
    scope: 'webhook',
    tenant: tenantId,
    target: webhookId,
    action: 'pause',
    reason: 'test',
    created_at: new Date().toISOString(),
  };
  return { ...deliveryAt(0, sent), switches: { current: async () => [pause], refresh: async () => [pause] } };
}

/** The reconciler's check of a webhook, sent at `sentAt` (now unless given). */
function checkOf(tenantId: string, webhookId: string, sentAt = Date.now()): CheckMessage {
  return { kind: 'check', tenantId, webhookId, sentAt };
}

/** A new tenant `name` and its webhook on `resource`, whose endpoint is the receiver's path `/name`. */
async function newWebhook(name: string, resource: string) {
  const tenant = await createTenant(sandbox, name);
  const hook = await createWebhook(sandbox, tenant.key, { resource, url: `${receiver.url}/${name}` });
  return { tenant, hook };
}

/** The webhook as the delivery function reads it. */
async function read(tenantId: string, webhookId: string): Promise<Webhook> {
  const webhook = await deliveryAt(0).webhooks.get(tenantId, webhookId);
  if (!webhook) throw new Error('no webhook');
  return webhook;
}

/** A time at least `offsetMs` from now at which the reconciler's run reads the `by_chain` shard `webhookId` is listed under. */
function runReading(webhookId: string, offsetMs: number): number {
  const interval = scheduleSeconds(sandbox.config.reconcileIntervalSeconds) * 1000;
  const shard = shardNumber(webhookId, CHAIN_SHARDS);
  let run = Math.ceil((Date.now() + offsetMs) / interval);
  run += (shard - (run % CHAIN_SHARDS) + CHAIN_SHARDS) % CHAIN_SHARDS;
  return run * interval + 1_000;
}

/** The checks a reconciler run at `at` sends (kept here, not sent). */
async function checksSentAt(at: number): Promise<CheckMessage[]> {
  const checks: CheckMessage[] = [];
  const deps = reconcilerDeps({ ...sandbox.wiring, now: () => at });
  const report = await reconcile({
    ...deps,
    chains: {
      watched: new WatchedWebhooks({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable }),
      checks: { send: async (messages) => void checks.push(...(messages as CheckMessage[])) },
    },
  });
  expect(report.webhooksChecked).toBe(checks.length);
  return checks;
}

async function listed(webhookId: string): Promise<boolean> {
  const watched = new WatchedWebhooks({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
  const shard = shardNumber(webhookId, CHAIN_SHARDS);
  return (await watched.list(shard)).some((w) => w.webhookId === webhookId);
}

async function delayed(): Promise<number> {
  const { Attributes } = await sqsClient(sandbox.emulators.sqs).send(
    new GetQueueAttributesCommand({
      QueueUrl: sandbox.queues[DELIVER_QUEUE.logicalName]?.url,
      AttributeNames: ['ApproximateNumberOfMessagesDelayed'],
    }),
  );
  return Number(Attributes?.ApproximateNumberOfMessagesDelayed);
}

const message = resourceDeliveryFixture;

describe('a quiet quarantined webhook whose probe chain was purged', () => {
  it("is probed again after the reconciler's check finds the chain overdue, recovers and releases what it held", async () => {
    const { tenant, hook } = await newWebhook('purged-probe', 'pp:1');
    const health = async () => (await call(sandbox, 'GET', `/v1/webhooks/${hook.id}`, { key: tenant.key })).body.health;
    receiver.answer('/purged-probe', 500);
    const accepted = (await publish(sandbox, tenant.key, [{ resource: 'pp:1', type: 'doc.changed', data: 1 }])).body.events[0].id;
    let state = '';
    for (let i = 0; i < 200 && state !== 'quarantined'; i++, await sleep(100)) state = (await health()).state;
    expect(state).toBe('quarantined');
    expect(await listed(hook.id)).toBe(true);

    // The probe waits out its delay in the deliver queue: the purge takes it.
    for (let i = 0; i < 100 && (await delayed()) === 0; i++) await sleep(20);
    await sqsClient(sandbox.emulators.sqs).send(new PurgeQueueCommand({ QueueUrl: sandbox.queues[DELIVER_QUEUE.logicalName]?.url }));
    receiver.answer('/purged-probe', 200);
    await sleep(4_000);
    expect((await health()).state).toBe('quarantined');
    expect(receiver.probes('/purged-probe')).toEqual([]);

    // Its shard's next check before the chain is overdue: nothing is started.
    const before = sandbox.metrics.total('ChainsRevived');
    const early = await checksSentAt(runReading(hook.id, 0));
    const ours = early.filter((c) => c.webhookId === hook.id);
    expect(ours).toHaveLength(1);
    expect(await handleDeliverMessage(deliveryAt(0), ours[0] as CheckMessage)).toBe('checked');
    expect(sandbox.metrics.total('ChainsRevived')).toBe(before);

    // A run of its shard more than CHAIN_LOST_AFTER_MS on: the check starts a probe chain,
    // whose probe the sandbox's delivery function sends; the endpoint answers, the webhook
    // recovers, and its held delivery goes.
    const at = runReading(hook.id, CHAIN_LOST_AFTER_MS + 60_000);
    const [check, ...others] = (await checksSentAt(at)).filter((c) => c.webhookId === hook.id);
    expect(others).toEqual([]);
    expect(check).toMatchObject({ kind: 'check', tenantId: tenant.id, webhookId: hook.id, sentAt: at });
    expect(await handleDeliverMessage(deliveryAt(at - Date.now()), check as CheckMessage)).toBe('checked');
    expect(sandbox.metrics.total('ChainsRevived')).toBe(before + 1);
    await receiver.waitFor(() => receiver.acceptedEvents('/purged-probe').some((e) => e.id === accepted), 15_000);
    expect(receiver.probes('/purged-probe')).toHaveLength(1);
    for (let i = 0; i < 100 && ((await health()).state !== 'healthy' || (await health()).held > 0); i++) await sleep(100);
    expect(await health()).toMatchObject({ state: 'healthy', held: 0 });
  }, 60_000);
});

describe("the delivery function's check of a listed webhook", () => {
  it('starts a release chain lost with deliveries held, once overdue by more than the check itself waited in the deliver queue', async () => {
    const { tenant, hook } = await newWebhook('lost-release-check', 'lc:1');
    const deps = deliveryAt(0);
    expect(await holdDelivery(deps, message(tenant.id, hook.id, 1, 'lc:1'))).toEqual([true, true]);
    const webhook = await read(tenant.id, hook.id);
    // A release chain that took its last step 30 minutes ago; its message was lost.
    const releaseAt = Date.now() - 30 * 60_000;
    expect(await deps.webhooks.saveHealth(webhook, webhook.health, { releaseToken: 'msg_lost', releaseAt })).toBe(true);
    expect(await listed(hook.id)).toBe(true);

    // A check that itself waited 15 minutes in the queue: the chain may only be late with it.
    const check = checkOf(tenant.id, hook.id, Date.now() - 15 * 60_000);
    const sent: DeliverQueueMessage[] = [];
    expect(await handleDeliverMessage(deliveryAt(0, sent), check)).toBe('checked');
    expect(sent).toEqual([]);

    // One that came at once: the chain is lost, and a new one releases what it held.
    expect(await handleDeliverMessage(deliveryAt(0), { ...check, sentAt: Date.now() })).toBe('checked');
    await receiver.waitFor(() => receiver.acceptedEvents('/lost-release-check').length === 1, 10_000);
    for (let i = 0; i < 100 && (await deps.webhooks.get(tenant.id, hook.id))?.releaseToken !== undefined; i++) await sleep(100);
    // The chain ended: the next check finds nothing to watch, and takes the webhook off the index.
    expect(await listed(hook.id)).toBe(true);
    expect(await handleDeliverMessage(deliveryAt(0), { ...check, sentAt: Date.now() })).toBe('checked');
    expect(await listed(hook.id)).toBe(false);
  }, 30_000);

  it('starts a release chain lost with nothing held, which still had its token (gap markers owed): else listed for good', async () => {
    const { tenant, hook } = await newWebhook('lost-markers', 'lm:1');
    const deps = deliveryAt(0);
    const webhook = await read(tenant.id, hook.id);
    expect(webhook.heldCount).toBe(0);
    // A chain whose last step, 30 minutes ago, released all it held; its message, which
    // would have sent the gap markers and ended it, was lost.
    expect(
      await deps.webhooks.saveHealth(webhook, webhook.health, { releaseToken: 'msg_markers', releaseAt: Date.now() - 30 * 60_000 }),
    ).toBe(true);
    const sent: DeliverQueueMessage[] = [];
    const check = checkOf(tenant.id, hook.id);
    expect(await handleDeliverMessage(deliveryAt(0, sent), check)).toBe('checked');
    const revived = await deps.webhooks.get(tenant.id, hook.id);
    const token = revived?.releaseToken;
    expect(token).not.toBe('msg_markers');
    // Following the chain's start (its `release_at`), as each step follows the one before.
    expect(sent).toEqual([{ kind: 'release', tenantId: tenant.id, webhookId: hook.id, token, after: revived?.releaseAt }]);
  });

  it("starts a lost release chain that waited for its endpoint's time waiting for it still", async () => {
    const { tenant, hook } = await newWebhook('lost-waiting', 'lw:1');
    const deps = deliveryAt(0);
    expect(await holdDelivery(deps, message(tenant.id, hook.id, 1, 'lw:1'))).toEqual([true, true]);
    const webhook = await read(tenant.id, hook.id);
    // A chain held behind its endpoint's pace, whose shares given before it run an hour
    // on; its last look was 30 minutes ago, and its message was lost.
    const releaseNotBefore = Date.now() + 60 * 60_000;
    expect(
      await deps.webhooks.saveHealth(webhook, webhook.health, {
        releaseToken: 'msg_waiting',
        releaseAt: Date.now() - 30 * 60_000,
        releaseNotBefore,
      }),
    ).toBe(true);
    const sent: DeliverQueueMessage[] = [];
    const check = checkOf(tenant.id, hook.id);
    expect(await handleDeliverMessage(deliveryAt(0, sent), check)).toBe('checked');
    const revived = await deps.webhooks.get(tenant.id, hook.id);
    expect(revived?.releaseToken).not.toBe('msg_waiting');
    // The new chain waits for those shares too: the deliveries given them go first, at the endpoint's pace.
    expect(revived?.releaseNotBefore).toBe(releaseNotBefore);
    expect(sent).toEqual([
      {
        kind: 'release',
        tenantId: tenant.id,
        webhookId: hook.id,
        token: revived?.releaseToken,
        notBefore: releaseNotBefore,
        after: revived?.releaseAt,
      },
    ]);
    expect(receiver.acceptedEvents('/lost-waiting')).toEqual([]);
  });

  it('starts nothing for a webhook a switch holds, which its lift releases', async () => {
    const { tenant, hook } = await newWebhook('paused-check', 'pc:1');
    const deps = deliveryAt(0);
    expect(await holdDelivery(deps, message(tenant.id, hook.id, 1, 'pc:1'))).toEqual([true, true]);
    const webhook = await read(tenant.id, hook.id);
    expect(
      await deps.webhooks.saveHealth(webhook, webhook.health, { releaseToken: 'msg_paused', releaseAt: Date.now() - 30 * 60_000 }),
    ).toBe(true);
    const sent: DeliverQueueMessage[] = [];
    const paused = pausedAt(tenant.id, hook.id, sent);
    expect(await handleDeliverMessage(paused, checkOf(tenant.id, hook.id))).toBe('checked');
    expect(sent).toEqual([]);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.releaseToken).toBe('msg_paused');
    // Still listed: the lift's release, or a check after it, moves it on.
    expect(await listed(hook.id)).toBe(true);
  });

  it('starts a probe chain lost under a switch: a switch stops releases, not probes', async () => {
    const { tenant, hook } = await newWebhook('paused-probe', 'pq:1');
    const deps = deliveryAt(0);
    const webhook = await read(tenant.id, hook.id);
    // Quarantined, its probe due 30 minutes ago; the message carrying it was lost.
    const due = Date.now() - 30 * 60_000;
    const quarantined = {
      ...webhook.health,
      state: 'quarantined' as const,
      consecutiveFailures: 2,
      quarantinedAt: due - 2_000,
      probeIntervalSeconds: 2,
      nextProbeAt: due,
    };
    expect(await deps.webhooks.saveHealth(webhook, quarantined, { probeToken: 'msg_paused_probe' })).toBe(true);
    const sent: DeliverQueueMessage[] = [];
    const paused = pausedAt(tenant.id, hook.id, sent);
    const check = checkOf(tenant.id, hook.id);
    expect(await handleDeliverMessage(paused, check)).toBe('checked');
    const revived = await deps.webhooks.get(tenant.id, hook.id);
    const token = revived?.probeToken;
    expect(token).not.toBe('msg_paused_probe');
    // For the round it set: a copy of it probes nothing again once that round is probed.
    expect(sent).toEqual([{ kind: 'probe', tenantId: tenant.id, webhookId: hook.id, token, dueAt: revived?.health.nextProbeAt }]);
  });

  it('sends a disable notice still owed, then unlists the disabled webhook', async () => {
    const { tenant, hook } = await newWebhook('owed-notice', 'on:1');
    const deps = deliveryAt(0);
    const webhook = await read(tenant.id, hook.id);
    // Disabled by sluice, its notice owed; the message that would have sent it was lost.
    const disabled = { ...webhook.health, state: 'disabled' as const, disabledReason: 'quarantine_expired' };
    expect(await deps.webhooks.saveHealth(webhook, disabled, { status: 'disabled', noticePending: true })).toBe(true);
    expect(await listed(hook.id)).toBe(true);
    const notices = () => sandbox.notifier.notices.filter((n) => n.webhook === hook.id);
    expect(notices()).toEqual([]);

    const check = checkOf(tenant.id, hook.id);
    expect(await handleDeliverMessage(deps, check)).toBe('checked');
    expect(notices()).toMatchObject([{ type: 'webhook.disabled', webhook: hook.id, reason: 'quarantine_expired' }]);
    expect((await deps.webhooks.get(tenant.id, hook.id))?.noticePending).toBeFalsy();
    expect(await listed(hook.id)).toBe(true);
    expect(await handleDeliverMessage(deps, { ...check, sentAt: Date.now() })).toBe('checked');
    expect(await listed(hook.id)).toBe(false);
    expect(notices()).toHaveLength(1);
  });

  it('leaves a deleted webhook alone: its listing went with its item', async () => {
    const { tenant, hook } = await newWebhook('deleted-check', 'dc:1');
    const deps = deliveryAt(0);
    const webhook = await read(tenant.id, hook.id);
    expect(await deps.webhooks.saveHealth(webhook, webhook.health, { releaseToken: 'msg_gone', releaseAt: Date.now() })).toBe(true);
    expect(await listed(hook.id)).toBe(true);
    expect((await call(sandbox, 'DELETE', `/v1/webhooks/${hook.id}`, { key: tenant.key })).status).toBe(204);
    expect(await listed(hook.id)).toBe(false);
    expect(await handleDeliverMessage(deps, checkOf(tenant.id, hook.id))).toBe('stale');
  });
});

/** Takes the webhook off `by_chain` behind the code's back, as a chain started before the version with the index left it. */
async function unlistAsBefore(tenantId: string, webhookId: string): Promise<void> {
  await sandbox.wiring.dynamo.send(
    new UpdateCommand({
      TableName: sandbox.wiring.controlTable,
      Key: { pk: tenantPk(tenantId), sk: `webhook#${webhookId}` },
      UpdateExpression: 'REMOVE chain_shard, chain_sk',
    }),
  );
  expect(await listed(webhookId)).toBe(false);
}

describe('a chain started before the version with `by_chain`', () => {
  it("is listed by its next probe's health write", async () => {
    const { tenant, hook } = await newWebhook('old-probe', 'op:1');
    const deps = deliveryAt(0);
    const webhook = await read(tenant.id, hook.id);
    const now = Date.now();
    const quarantined = {
      ...webhook.health,
      state: 'quarantined' as const,
      consecutiveFailures: 2,
      quarantinedAt: now - 2_000,
      probeIntervalSeconds: 2,
      nextProbeAt: now,
    };
    expect(await deps.webhooks.saveHealth(webhook, quarantined, { probeToken: 'msg_old_probe' })).toBe(true);
    await unlistAsBefore(tenant.id, hook.id);
    receiver.answer('/old-probe', 500);
    const sent: DeliverQueueMessage[] = [];
    const probe: DeliverQueueMessage = { kind: 'probe', tenantId: tenant.id, webhookId: hook.id, token: 'msg_old_probe' };
    expect(await handleDeliverMessage(deliveryAt(0, sent), probe)).toBe('probed');
    // The next probe, for the round this one's answer set.
    expect(sent).toEqual([{ ...probe, dueAt: (await read(tenant.id, hook.id)).health.nextProbeAt }]);
    expect(await listed(hook.id)).toBe(true);
  });

  it('is listed by its next release step', async () => {
    const { tenant, hook } = await newWebhook('old-release', 'or:1');
    const deps = deliveryAt(0);
    expect(await holdDelivery(deps, message(tenant.id, hook.id, 1, 'or:1'))).toEqual([true, true]);
    const webhook = await read(tenant.id, hook.id);
    expect(await deps.webhooks.saveHealth(webhook, webhook.health, { releaseToken: 'msg_old_release', releaseAt: Date.now() })).toBe(true);
    await unlistAsBefore(tenant.id, hook.id);
    const sent: DeliverQueueMessage[] = [];
    const step: DeliverQueueMessage = { kind: 'release', tenantId: tenant.id, webhookId: hook.id, token: 'msg_old_release' };
    expect(await handleDeliverMessage(deliveryAt(0, sent), step)).toBe('released');
    expect(await listed(hook.id)).toBe(true);
  });
});

describe("the reconciler's checks", () => {
  it("are sent for the webhooks of the run's shard only, each in one shard", async () => {
    const tenant = await createTenant(sandbox, 'shards');
    const deps = deliveryAt(0);
    const hooks = [];
    for (let i = 0; i < 12; i++) {
      const hook = await createWebhook(sandbox, tenant.key, { resource: `sh:${i}`, url: `${receiver.url}/shards` });
      const webhook = await read(tenant.id, hook.id);
      expect(await deps.webhooks.saveHealth(webhook, webhook.health, { releaseToken: `msg_sh${i}`, releaseAt: Date.now() })).toBe(true);
      hooks.push(hook.id);
    }
    const interval = scheduleSeconds(sandbox.config.reconcileIntervalSeconds) * 1000;
    const base = Math.ceil(Date.now() / interval / CHAIN_SHARDS) * CHAIN_SHARDS * interval + 1_000;
    const seen = new Map<string, number>();
    for (let run = 0; run < CHAIN_SHARDS; run++) {
      for (const check of await checksSentAt(base + run * interval)) {
        if (!hooks.includes(check.webhookId)) continue;
        expect(seen.has(check.webhookId)).toBe(false);
        seen.set(check.webhookId, run);
        expect(chainShard(check.webhookId)).toBe(chainShardKey(run));
      }
    }
    expect([...seen.keys()].sort()).toEqual([...hooks].sort());
    // Twelve webhooks spread over more than one shard.
    expect(new Set(seen.values()).size).toBeGreaterThan(1);
  });

  it("that SQS refuses fail the run, for the function's error alarm, after the sweep of objects", async () => {
    const { tenant, hook } = await newWebhook('refused-checks', 'rc:1');
    const deps = deliveryAt(0);
    const webhook = await read(tenant.id, hook.id);
    expect(await deps.webhooks.saveHealth(webhook, webhook.health, { releaseToken: 'msg_rc', releaseAt: Date.now() })).toBe(true);
    const at = runReading(hook.id, 0);
    const errors: string[] = [];
    const run = reconcile({
      ...reconcilerDeps({ ...sandbox.wiring, now: () => at }),
      logger: { info: () => {}, warn: () => {}, error: (line: string) => void errors.push(line) },
      chains: {
        watched: new WatchedWebhooks({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable }),
        checks: {
          send: async () => {
            throw new Error('SQS refused the batch');
          },
        },
      },
    });
    await expect(run).rejects.toThrow(/^the checks of a shard's watched webhooks were not all sent \(logged\)/);
    expect(errors).toEqual([expect.stringMatching(/^Webhooks listed for a lost chain were not all sent a check/)]);
  });

  it('sent before SQS refused one batch are counted, and the rest left for the next sweep', async () => {
    // 150 listed webhooks (as the index would answer): a batch of 100 goes, the next is refused.
    const listed = Array.from({ length: 150 }, (_, i) => ({ tenantId: 'ten_many', webhookId: `wh_many${i}` }));
    const sent: unknown[] = [];
    const errors: Array<Record<string, unknown>> = [];
    const before = sandbox.metrics.total('WebhooksChecked');
    const run = reconcile({
      ...reconcilerDeps(sandbox.wiring),
      logger: {
        info: () => {},
        warn: () => {},
        error: (_line: string, fields?: Record<string, unknown>) => void errors.push(fields ?? {}),
      },
      chains: {
        watched: { list: async () => listed },
        checks: {
          send: async (messages) => {
            if (sent.length > 0) throw new Error('SQS refused the batch');
            sent.push(...messages);
          },
        },
      },
    });
    await expect(run).rejects.toThrow(/checks of a shard's watched webhooks were not all sent/);
    expect(sent).toHaveLength(100);
    expect(sandbox.metrics.total('WebhooksChecked') - before).toBe(100);
    expect(errors).toEqual([expect.objectContaining({ sent: 100 })]);
  });

  it('wait for the next sweep of their shard when the run has no time left for them, and say so', async () => {
    const warned: string[] = [];
    const sent: unknown[] = [];
    const report = await reconcile({
      ...reconcilerDeps(sandbox.wiring),
      logger: { info: () => {}, warn: (line: string) => void warned.push(line), error: () => {} },
      chains: {
        watched: new WatchedWebhooks({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable }),
        checks: { send: async (messages) => void sent.push(...messages) },
      },
      timeLeftMs: () => RING_MARGIN_MS - 1,
    });
    expect(report.webhooksChecked).toBe(0);
    expect(sent).toEqual([]);
    expect(warned).toContain("The webhooks of this run's by_chain shard left unchecked for its next sweep: out of time");
  });

  it("are sent by the sandbox's own run, within what the reconciler's role allows, for the webhooks its shard lists", async () => {
    const deps = deliveryAt(0);
    const interval = scheduleSeconds(sandbox.config.reconcileIntervalSeconds) * 1000;
    const shardNow = () => Math.floor(Date.now() / interval) % CHAIN_SHARDS;
    // Webhooks with chains until one is listed in the shard a run now reads: a new tenant
    // for every 15 (a tenant's webhook URLs are verified 20 in 10 s at most).
    let ours: string | undefined;
    let tenant = await createTenant(sandbox, 'own-run');
    for (let i = 0; i < 60 && ours === undefined; i++) {
      if (i > 0 && i % 15 === 0) tenant = await createTenant(sandbox, `own-run-${i}`);
      const hook = await createWebhook(sandbox, tenant.key, { resource: `or:${i}`, url: `${receiver.url}/own-run` });
      const webhook = await read(tenant.id, hook.id);
      expect(await deps.webhooks.saveHealth(webhook, webhook.health, { releaseToken: `msg_or${i}`, releaseAt: Date.now() })).toBe(true);
      if (chainShard(hook.id) === chainShardKey(shardNow())) ours = hook.id;
    }
    expect(ours).toBeDefined();
    const errors = sandbox.metrics.total('function:reconciler:Errors');
    const checked = sandbox.metrics.total('WebhooksChecked');
    const shard = shardNow();
    const report = await sandbox.reconcile();
    expect(sandbox.metrics.total('function:reconciler:Errors')).toBe(errors);
    if (shardNow() === shard) {
      const watched = new WatchedWebhooks({ client: sandbox.wiring.dynamo, tableName: sandbox.wiring.controlTable });
      expect(report.webhooksChecked).toBe((await watched.list(shard)).length);
      expect(report.webhooksChecked).toBeGreaterThanOrEqual(1);
    }
    expect(sandbox.metrics.total('WebhooksChecked')).toBe(checked + report.webhooksChecked);
  });
});
