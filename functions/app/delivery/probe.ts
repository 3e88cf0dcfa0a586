/** A quarantined endpoint's probe: a signed ping, on a doubling interval, whose success starts the release. */
import { pingEvent } from '../../core/deliveries.ts';
import { newId } from '../../core/ids.ts';
import type { ProbeMessage } from '../../core/model.ts';
import { decideAttempt } from '../../core/outcome.ts';
import { attempt } from './attempt.ts';
import { type DeliveryDeps, type DeliveryOutcome, describe, later } from './deps.ts';
import { applyHealth, tellOwner } from './health.ts';

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
  if (!webhook || webhook.probeToken !== message.token || webhook.health.state !== 'quarantined') return 'stale';
  if (webhook.notBefore !== undefined && webhook.notBefore > now) {
    await later(deps, message, (webhook.notBefore - now) / 1000);
    return 'waiting';
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
  if (decideAttempt(result.statusCode) === 'delivered') {
    await applyHealth(deps, webhook, { type: 'probe_succeeded', now });
    return 'probed';
  }
  if (result.statusCode === 410) {
    await applyHealth(deps, webhook, { type: 'gone', now, statusCode: 410 });
    return 'probed';
  }
  const updated = await applyHealth(deps, webhook, { type: 'probe_failed', now, statusCode: result.statusCode, error: describe(result) });
  if (updated.health.state === 'quarantined') {
    await later(deps, message, updated.health.probeIntervalSeconds ?? deps.config.probeIntervalMinSeconds);
  }
  return 'probed';
}
