/** A quarantined endpoint's probe: a signed ping, on a doubling interval, whose success starts the release. */
import { failingWaitSeconds } from '../../core/backoff.ts';
import { pingEvent } from '../../core/deliveries.ts';
import type { HealthEvent } from '../../core/health.ts';
import { newId } from '../../core/ids.ts';
import type { ProbeMessage, Webhook } from '../../core/model.ts';
import { decideAttempt } from '../../core/outcome.ts';
import { attempt } from './attempt.ts';
import { type DeliveryDeps, type DeliveryOutcome, describe, later, takeTenantFailingSlot } from './deps.ts';
import { applyHealth, probeWaitSeconds, tellOwner } from './health.ts';

/** Whether `webhook` is still in the probe round `message` was sent for: its chain's token, and the round's time. */
function inRound(webhook: Webhook | undefined, message: ProbeMessage): webhook is Webhook {
  if (!webhook || webhook.probeToken !== message.token || webhook.health.state !== 'quarantined') return false;
  return message.dueAt === undefined || webhook.health.nextProbeAt === message.dueAt;
}

export async function probe(deps: DeliveryDeps, message: ProbeMessage): Promise<DeliveryOutcome> {
  const now = deps.now();
  if (message.notBefore !== undefined && message.notBefore > now) {
    await later(deps, message, (message.notBefore - now) / 1000);
    return 'waiting';
  }
  const webhook = await deps.webhooks.get(message.tenantId, message.webhookId);
  // An owed notice SNS could not take comes back here (see `tellOwner`), as does a probe
  // that disabled the webhook (quarantine expired) and died before telling the owner.
  if (webhook?.noticePending) await tellOwner(deps, webhook, now);
  // Another chain's, or a round already probed: a copy of this message probed it.
  if (!inRound(webhook, message)) return 'stale';
  if (webhook.notBefore !== undefined && webhook.notBefore > now) {
    await later(deps, message, (webhook.notBefore - now) / 1000);
    return 'waiting';
  }
  // A probe is an attempt at a failing endpoint, and takes its place in the tenant's budget
  // for those (see `deliver`): without it, a tenant's endpoints quarantined together were
  // probed together, each probe of a hanging one holding a delivery worker for the whole
  // timeout, as many at once as the tenant has webhooks. Its round waits, no failure counted.
  if (!(await takeTenantFailingSlot(deps, webhook.tenantId, now))) {
    deps.metrics.count('DeliveriesDelayed', 1, { reason: 'tenant_failing' });
    const waits = message.tenantWaits ?? 0;
    const waitSeconds = failingWaitSeconds(deps.config.failingAttemptIntervalMs, waits);
    await later(deps, { ...message, tenantWaits: waits + 1 }, probeWaitSeconds(deps, waitSeconds));
    return 'throttled';
  }
  const ping = pingEvent(newId('evt', now), webhook.resource, now, { probe: true });
  const result = await attempt(
    deps,
    webhook,
    {
      deliveryId: newId('msg', now),
      tenantId: webhook.tenantId,
      webhookId: webhook.id,
      events: [ping],
      attempt: 1,
    },
    { probe: true },
  );
  deps.metrics.count('Probes', 1, { result: decideAttempt(result.statusCode) });
  // Applied only in this round: two copies of the message received at once both probe
  // (neither has moved the round on when the other reads it), and one of them goes on.
  let superseded = false;
  const apply = (event: HealthEvent) =>
    applyHealth(deps, webhook, event, (current) => {
      superseded = !inRound(current, message);
      return !superseded;
    });
  if (decideAttempt(result.statusCode) === 'delivered') {
    await apply({ type: 'probe_succeeded', now });
    return superseded ? 'stale' : 'probed';
  }
  if (result.statusCode === 410) {
    await apply({ type: 'gone', now, statusCode: 410 });
    return superseded ? 'stale' : 'probed';
  }
  const updated = await apply({ type: 'probe_failed', now, statusCode: result.statusCode, error: describe(result) });
  if (superseded) return 'stale';
  if (updated.health.state === 'quarantined') {
    const interval = updated.health.probeIntervalSeconds ?? deps.config.probeIntervalMinSeconds;
    const { tenantId, webhookId, token } = message;
    const next: ProbeMessage = { kind: 'probe', tenantId, webhookId, token, dueAt: updated.health.nextProbeAt };
    await later(deps, next, probeWaitSeconds(deps, interval));
  }
  return 'probed';
}
