/**
 * An endpoint's health moving on (core/health.ts decides; this saves it and acts on
 * the transition): quarantine starts the probes, recovery the release, and a disable
 * owes its owner a notice, sent here and tried again until it goes.
 */
import { jitteredSeconds } from '../../core/backoff.ts';
import { type HealthEvent, nextHealth, startsRelease } from '../../core/health.ts';
import { newId } from '../../core/ids.ts';
import type { ProbeMessage, Webhook } from '../../core/model.ts';
import { redactedUrl } from '../../core/redact.ts';
import { context, type DeliveryDeps, later } from './deps.ts';

/**
 * The wait before a probe: its interval, give or take the retry schedule's jitter. A
 * tenant's endpoints that failed together (one outage behind them all, the same
 * deliveries hanging on each to the same timeout) are quarantined within moments of
 * each other; probed on the dot, they stayed in step for days, every round a burst of
 * POSTs that hang together, each holding a delivery worker for the whole timeout.
 */
export function probeWaitSeconds(deps: Pick<DeliveryDeps, 'config' | 'random'>, intervalSeconds: number): number {
  return Math.max(1, jitteredSeconds(intervalSeconds, deps.config.retryJitter, deps.random));
}

/** How often a healthy endpoint's last success time is written at most. */
const SUCCESS_WRITE_INTERVAL_MS = 60_000;

/**
 * Applies a health event, retrying on a concurrent writer, and acts on the
 * transition: entering quarantine starts the probes, leaving it starts the
 * release, being disabled tells the owner.
 */
export async function applyHealth(
  deps: DeliveryDeps,
  webhook: Webhook,
  event: HealthEvent,
  still: (current: Webhook) => boolean = () => true,
): Promise<Webhook> {
  const policy = deps.config;
  // An endpoint's answer (or its silence) is about the URL it came from, `webhook`'s: one
  // that comes after the owner moved the webhook to another URL is not the new URL's.
  const answeredBy = ANSWERS.has(event.type) ? webhook.url : undefined;
  let current = webhook;
  for (let attempt = 0; attempt < 8; attempt++) {
    if (answeredBy !== undefined && current.url !== answeredBy) return current;
    // The caller's own condition on the webhook as read again (a probe's round, see probe.ts).
    if (!still(current)) return current;
    const before = current.health;
    const after = nextHealth(before, event, policy);
    if (after === before) return current;
    const quietSuccess =
      event.type === 'success' &&
      before.state === 'healthy' &&
      before.consecutiveFailures === 0 &&
      // The first delivery to succeed after a probe's ends the endpoint's trouble: written.
      before.troubleSince === undefined &&
      before.lastSuccessAt !== undefined &&
      event.now - Date.parse(before.lastSuccessAt) < SUCCESS_WRITE_INTERVAL_MS;
    if (quietSuccess) return current;
    const entersQuarantine = after.state === 'quarantined' && before.state !== 'quarantined';
    const recovers = startsRelease(before, after, event, current.heldCount);
    const disables = after.state === 'disabled' && before.state !== 'disabled';
    // A new probe chain on entering quarantine; the token is removed on leaving it.
    const probeToken = entersQuarantine
      ? newId('msg', event.now)
      : after.state !== 'quarantined' && current.probeToken !== undefined
        ? null
        : undefined;
    const releaseToken = recovers ? newId('msg', event.now) : undefined;
    const status = disables ? ('disabled' as const) : event.type === 'reenabled' ? ('active' as const) : undefined;
    // A notice owed to the owner is saved with the state that owes it, so that losing
    // the SNS publish after this write cannot lose the notice (see `tellOwner`).
    const noticePending =
      disables && after.disabledReason !== 'by_owner' ? true : current.noticePending && after.state !== 'disabled' ? null : undefined;
    const saved = await deps.webhooks.saveHealth(current, after, {
      ...(status && { status, updatedAt: new Date(event.now).toISOString() }),
      ...(probeToken !== undefined && { probeToken }),
      ...(releaseToken && { releaseToken, releaseAt: event.now, releaseNotBefore: null }),
      ...(noticePending !== undefined && { noticePending }),
      ...(answeredBy !== undefined && { url: answeredBy }),
    });
    if (!saved) {
      const fresh = await deps.webhooks.get(current.tenantId, current.id);
      if (!fresh) return current;
      current = fresh;
      continue;
    }
    const updated: Webhook = {
      ...current,
      health: after,
      healthVersion: current.healthVersion + 1,
      ...(status && { status, updatedAt: new Date(event.now).toISOString() }),
      ...(probeToken && { probeToken }),
      ...(releaseToken && { releaseToken }),
      noticePending: noticePending === true,
    };
    const ctx = { tenant: current.tenantId, webhook: current.id, from: before.state, to: after.state };
    // What the endpoint last answered: on-call's admin key cannot read the webhook's health.
    const failures = { consecutive_failures: after.consecutiveFailures, last_failure: after.lastFailure ?? null };
    if (entersQuarantine && probeToken) {
      deps.metrics.count('WebhooksQuarantined');
      deps.logger.warn('Endpoint quarantined', { ...ctx, ...failures });
      await later(
        deps,
        { kind: 'probe', tenantId: current.tenantId, webhookId: current.id, token: probeToken, dueAt: after.nextProbeAt },
        probeWaitSeconds(deps, after.probeIntervalSeconds ?? deps.config.probeIntervalMinSeconds),
      );
    }
    if (recovers && releaseToken) {
      deps.metrics.count('WebhooksRecovered');
      deps.logger.info('Endpoint recovered; releasing held deliveries', ctx);
      await deps.queue.send([
        { kind: 'release', tenantId: current.tenantId, webhookId: current.id, token: releaseToken, after: event.now },
      ]);
    }
    if (disables) {
      // The webhook-disabled alarm pages when sluice disables an endpoint, not when its owner does.
      if (after.disabledReason === 'by_owner') deps.metrics.count('WebhooksDisabledByOwner');
      else deps.metrics.count('WebhooksDisabled', 1, { reason: after.disabledReason ?? 'unknown' });
      deps.logger.warn('Webhook disabled', { ...ctx, reason: after.disabledReason, ...failures });
      if (noticePending === true) await tellOwner(deps, updated, event.now);
    }
    return updated;
  }
  if (event.type === 'success' || event.type === 'failure') {
    // Other answers of the endpoint won every write (many arriving at once): this one's
    // change is left out, and the answers after it decide. Its POST was made; failing
    // the record would make it again, a duplicate, after the visibility timeout.
    deps.metrics.count('HealthWritesGivenUp');
    return current;
  }
  throw new Error('Could not save the webhook health after repeated conflicts');
}

/** The health events that an endpoint's answer makes (the others are its owner's). */
const ANSWERS: ReadonlySet<HealthEvent['type']> = new Set(['success', 'failure', 'gone', 'probe_succeeded', 'probe_failed']);

/** The token of a probe message sent for an owed notice only: no probe chain has it. */
const NOTICE_AGAIN_TOKEN = 'notice';

/** When an owed notice is tried again: past a claim's minute (NOTICE_CLAIM_MS), should its release have failed too. */
const NOTICE_AGAIN_SECONDS = 90;

/**
 * Tells the owner that sluice disabled their webhook. The notice is owed on the
 * webhook from the write that disabled it until it is sent; whoever claims it sends it
 * (one claimer at a time, for a minute, and only while the webhook is still disabled),
 * as the claim read it: the webhook may have been enabled and disabled again since
 * `webhook` was read. A send that fails gives its claim up and sends a message that
 * comes back to try again (or the next delivery to the webhook does); a sender that
 * dies lets it run out, and SQS brings its message back to try again. Either ends only its
 * own claim, so a late sender of an earlier disable's notice cannot take a later one's
 * for sent. A failure is counted and logged, never thrown: holding the delivery matters
 * more than the notice.
 */
export async function tellOwner(deps: DeliveryDeps, webhook: Webhook, now: number): Promise<void> {
  const ctx = context({ tenantId: webhook.tenantId, webhookId: webhook.id });
  let claimed: Awaited<ReturnType<DeliveryDeps['webhooks']['claimNotice']>>;
  try {
    claimed = await deps.webhooks.claimNotice(webhook.tenantId, webhook.id, now);
  } catch (error) {
    deps.logger.error('Disable notice could not be claimed; owed still', { ...ctx, error });
    await tellOwnerLater(deps, webhook);
    return;
  }
  if (!claimed) return;
  const { claim, webhook: disabled } = claimed;
  try {
    await deps.notifier.webhookDisabled({
      type: 'webhook.disabled',
      tenant: disabled.tenantId,
      webhook: disabled.id,
      // The topic's subscribers (a relay, a chat integration) are not all the owner.
      url: redactedUrl(disabled.url),
      reason: disabled.health.disabledReason ?? 'unknown',
      last_error: disabled.health.lastFailure ?? null,
      at: disabled.health.lastFailure?.at ?? new Date(now).toISOString(),
    });
  } catch (error) {
    deps.metrics.count('DisableNoticesFailed');
    deps.logger.error('Disable notice not sent; owed again', { ...ctx, error });
    await deps.webhooks.oweNoticeAgain(webhook.tenantId, webhook.id, claim).catch(() => undefined);
    await tellOwnerLater(deps, webhook);
    return;
  }
  // Sent: owed no more. Should this write fail, the claim runs out and the owner hears twice.
  await deps.webhooks.noticeSent(webhook.tenantId, webhook.id, claim).catch((error: unknown) => {
    deps.logger.error('Disable notice sent, but not marked sent: it may go twice', { ...ctx, error });
  });
}

/**
 * A disabled webhook gets no probes, and a quiet one no deliveries either: a message
 * comes back for an owed notice (a probe's, of a token no chain has: `probe` sends what
 * is owed before it looks at its token), and, failing again, sends the next.
 */
async function tellOwnerLater(deps: DeliveryDeps, webhook: Webhook): Promise<void> {
  const again: ProbeMessage = { kind: 'probe', tenantId: webhook.tenantId, webhookId: webhook.id, token: NOTICE_AGAIN_TOKEN };
  await deps.queue.send([again], NOTICE_AGAIN_SECONDS).catch((error: unknown) => {
    deps.logger.error('Disable notice owed, and nothing sent to try it again: the next delivery to the webhook sends it', {
      ...context({ tenantId: webhook.tenantId, webhookId: webhook.id }),
      error,
    });
  });
}
