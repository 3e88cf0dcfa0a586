/**
 * Probe and release chains live in the deliver queue, one message after another. This
 * starts them, revives one that was lost (a delivery held behind it, or the
 * reconciler's check), and rechecks after a kill switch whether its lift left held
 * deliveries with no chain to send them.
 */
import { sqsDelay } from '../../core/backoff.ts';
import { paceLookSeconds } from '../../core/endpoint-pace.ts';
import { deliversTo } from '../../core/health.ts';
import { newId } from '../../core/ids.ts';
import type { CheckMessage, DeliveryMessage, RecheckMessage, Webhook } from '../../core/model.ts';
import { actionForWebhook, liftRecheck, releasedSince, releaseLookAt, releaseStepEndsBy } from '../../core/switches.ts';
import { context, type DeliveryDeps, type DeliveryOutcome, needsChain, takesDeliveries } from './deps.ts';
import { tellOwner } from './health.ts';

/**
 * How long a probe may be overdue, or a release chain go without a step, before the
 * chain counts as lost. Longer than any wait a live chain makes (SQS delays a message
 * 15 minutes at most; longer waits are chained through it).
 */
export const CHAIN_LOST_AFTER_MS = 20 * 60_000;

/**
 * A chain of probes or of release steps lives in the deliver queue: if a message of
 * it is lost (a send that failed after the state change was saved, or a message
 * dead-lettered), a quarantined webhook would never be probed again, or a healthy one
 * would hold every delivery behind what it already holds. Each delivery held for it
 * checks, and starts a new chain (a new token ends any old one) when the old one is
 * overdue by CHAIN_LOST_AFTER_MS more than this delivery itself waited since its
 * oldest event was accepted: a deliver queue that runs late makes the chain late too,
 * and reviving a live chain then would only push it to the back of that queue. A
 * probe that waits for the endpoint's Retry-After is not overdue before it ends.
 */
export async function reviveLostChain(deps: DeliveryDeps, webhook: Webhook, message: DeliveryMessage, now: number): Promise<void> {
  const accepted = Math.min(...message.events.map((e) => Date.parse(e.created_at)).filter(Number.isFinite));
  const lostAfter = CHAIN_LOST_AFTER_MS + (Number.isFinite(accepted) ? Math.max(0, now - accepted) : 0);
  // Each start is conditional on the health read: refused because another container's
  // answer changed it meanwhile (a success written a minute after the last, a failure),
  // the webhook is read again and looked at anew; given up on that refusal, this delivery
  // would wait for a later one to notice the lost chain, and a quiet webhook's for good.
  // A reviver that got there first left a chain on time, which the look anew finds.
  await onFreshWebhook(deps, webhook, (current) => reviveChainOnce(deps, current, context(message), now, lostAfter));
}

/**
 * The reconciler's check of a webhook `by_chain` lists (webhook-store.ts `saveHealth`
 * lists every webhook a chain starts on, or that comes to owe a disable notice). A chain
 * lost with no delivery coming to notice it (see reviveLostChain) is started again here:
 * a quiet quarantined webhook would otherwise never be probed again, nor disabled, nor
 * its owner told, and what a lost release chain held would wait for the webhook's next
 * delivery, its gap markers with it. Lost means overdue by CHAIN_LOST_AFTER_MS more than
 * this check waited in the deliver queue: a queue that runs late makes the chains in it
 * late too. A switch in force stops a release on purpose (its lift starts one: `recheck`),
 * not a probe chain.
 * A notice still owed is sent. A webhook left with nothing to watch is unlisted.
 */
export async function check(deps: DeliveryDeps, message: CheckMessage): Promise<DeliveryOutcome> {
  const now = deps.now();
  const webhook = await deps.webhooks.get(message.tenantId, message.webhookId);
  // A deleted webhook's item, and with it its listing, is gone: a check sent before that finds nothing.
  if (!webhook) return 'stale';
  if (webhook.noticePending) await tellOwner(deps, webhook, now);
  const chained = webhook.status === 'active' && (webhook.probeToken !== undefined || webhook.releaseToken !== undefined);
  if (!chained) {
    // A notice just sent is unlisted by the next check, which reads it sent.
    if (!webhook.noticePending) await deps.webhooks.unlistUnwatched(webhook.tenantId, webhook.id);
    return 'checked';
  }
  // A switch stops a release, not a probe chain (`probe` reads no switch): a probe chain
  // lost under a pause is started again all the same, or a quiet quarantined webhook
  // would go unprobed, and undisabled, for as long as the switch lasts.
  const releases = actionForWebhook(await deps.switches.current(), webhook.tenantId, webhook.id) === undefined;
  const lostAfter = CHAIN_LOST_AFTER_MS + Math.max(0, now - message.sentAt);
  await onFreshWebhook(deps, webhook, (current) => reviveChainOnce(deps, current, context(message), now, lostAfter, releases));
  return 'checked';
}

/**
 * Starts a chain that `webhook` shows lost (see reviveLostChain and `check`): a probe
 * chain overdue, or a release chain gone without a step, where something is held or a
 * chain was under way (one that owed only gap markers); false when its health changed
 * since it was read. `releases` false: a release chain is not started (a switch in force
 * stops one on purpose), a probe chain still is.
 */
async function reviveChainOnce(
  deps: DeliveryDeps,
  webhook: Webhook,
  ctx: ReturnType<typeof context>,
  now: number,
  lostAfter: number,
  releases = true,
): Promise<boolean> {
  const { health } = webhook;
  if (webhook.status !== 'active') return true;
  if (health.state === 'quarantined' && health.nextProbeAt !== undefined) {
    const due = Math.max(health.nextProbeAt, webhook.notBefore ?? 0);
    if (now - due <= lostAfter) return true;
    const token = newId('msg', now);
    const interval = health.probeIntervalSeconds ?? deps.config.probeIntervalMinSeconds;
    // Conditional on the health this read: of concurrent revivers, one starts a chain.
    const dueAt = now + interval * 1000;
    if (!(await deps.webhooks.saveHealth(webhook, { ...health, nextProbeAt: dueAt }, { probeToken: token }))) return false;
    deps.metrics.count('ChainsRevived', 1, { chain: 'probe' });
    deps.logger.warn('Probe chain was lost; probing again', ctx);
    await deps.queue.send([{ kind: 'probe', tenantId: webhook.tenantId, webhookId: webhook.id, token, dueAt }]);
    return true;
  }
  // Once: of concurrent revivers, the one whose write applies starts the chain.
  const releasing = webhook.heldCount > 0 || webhook.releaseToken !== undefined;
  if (!releases || !deliversTo(health) || !releasing || now - (webhook.releaseAt ?? 0) <= lostAfter) return true;
  // A chain that waited for the end of the shares given before its backlog was held
  // (`releaseNotBefore`, see `holdBehindPace`) is started again waiting for it too: started
  // at once, it sent the backlog beside the deliveries given those shares, over the
  // endpoint's pace and ahead of older events of the same resources.
  if (!(await beginRelease(deps, webhook, now, webhook.releaseNotBefore))) return false;
  deps.metrics.count('ChainsRevived', 1, { chain: 'release' });
  deps.logger.warn('Release chain was lost; releasing again', ctx);
  return true;
}

/**
 * A delivery is held on what it read of the webhook before it was counted: something
 * held, or the endpoint quarantined or disabled. If meanwhile the release chain ran out
 * (its last step found nothing held and ended), or the endpoint recovered and its whole
 * release ran, no chain would send this one: with no chain (its token gone), nothing but a later
 * delivery would notice, not even the reconciler's `check`, and a quiet webhook may have none. The count's own write
 * (`counted`) tells: an active endpoint that delivers, with no chain, gets one now. The
 * chain's start is conditional on the health that write read: another container's
 * answer may change the health in between (a success written a minute after the last, a
 * failure), and then the webhook is read again and looked at anew, as `startRelease`
 * does; given up on that refusal, nothing would send this delivery.
 */
export async function releaseIfNoChain(deps: DeliveryDeps, counted: Webhook, message: DeliveryMessage): Promise<void> {
  await onFreshWebhook(deps, counted, async (current) => {
    if (!needsChain(current)) return true;
    if (!(await beginRelease(deps, current, deps.now()))) return false;
    deps.metrics.count('ChainsRevived', 1, { chain: 'release_ended' });
    deps.logger.info('Held after the release chain ended; releasing again', context(message));
    return true;
  });
}

/** The SQS delay of a waiting release chain's next look at its time `notBefore` (core/endpoint-pace.ts `paceLookSeconds`). */
export function lookDelaySeconds(notBefore: number, now: number): number {
  return sqsDelay(paceLookSeconds((notBefore - now) / 1000)).delaySeconds;
}

/**
 * Starts a release chain on the webhook as read, with a token of its own (which ends
 * any older chain); false, starting nothing, when the webhook's health changed since.
 */
export async function beginRelease(deps: DeliveryDeps, webhook: Webhook, now: number, notBefore?: number): Promise<boolean> {
  const token = newId('msg', now);
  const waits = notBefore !== undefined && notBefore > now;
  // A chain that waits for its time sends nothing now: noted as a step already ended, so
  // that the quick answer that gives the time back starts a new one (see `releaseGivenBack`).
  const releaseAt = waits ? releaseLookAt(now, deps.config.deliveryTimeoutMs, RECHECK_MARGIN_MS) : now;
  const releaseNotBefore = waits ? notBefore : null;
  if (!(await deps.webhooks.saveHealth(webhook, webhook.health, { releaseToken: token, releaseAt, releaseNotBefore }))) return false;
  const step = { kind: 'release' as const, tenantId: webhook.tenantId, webhookId: webhook.id, token, after: releaseAt };
  if (!waits) await deps.queue.send([step]);
  else await deps.queue.send([{ ...step, notBefore }], lookDelaySeconds(notBefore, now));
  return true;
}

/** Starts releasing what a webhook holds (and its gap markers), e.g. when a switch is lifted. */
export async function startRelease(deps: DeliveryDeps, webhook: Webhook): Promise<void> {
  await onFreshWebhook(deps, webhook, (current) => beginRelease(deps, current, deps.now()));
}

/**
 * Runs `act` on the webhook as read, and again on the webhook read afresh each time it
 * answers false (its write, conditional on the health it read, was refused: another
 * container's answer changed it meanwhile), up to 5 times, until the webhook is gone.
 */
export async function onFreshWebhook(deps: DeliveryDeps, webhook: Webhook, act: (current: Webhook) => Promise<boolean>): Promise<void> {
  for (let attempt = 0, current: Webhook | undefined = webhook; current && attempt < 5; attempt++) {
    if (await act(current)) return;
    current = await deps.webhooks.get(current.tenantId, current.id);
  }
}

/**
 * The endpoint's time was given back (it answers quickly again) while its webhook holds
 * deliveries (`webhook` as the attempt's delivery read it). A chain waiting for the shares
 * given before a slow backlog was held (see `holdBehindPace`) would send them only at its
 * next look, up to 15 minutes on, and every delivery meanwhile is held behind them, past
 * the held cap into gap markers, to an endpoint that takes them quickly now. A new chain
 * sends them at once (its token ends the waiting one). Not while a step of the chain may
 * still be sending (it began within a step's longest time): the new chain would send that
 * page again, and a chain stepping that often is releasing already. A chain's start and
 * its looks while it waits send nothing, and are noted as steps already ended (see
 * `release`), so they keep no new chain off. A failure is logged,
 * not thrown: the POST was made, and failing its delivery would make it again; the
 * waiting chain's next look sends them, or, if the new token was saved and its step not
 * sent, a chain revived for a delivery held behind them (see `reviveLostChain`).
 */
export async function releaseGivenBack(deps: DeliveryDeps, webhook: Webhook): Promise<void> {
  if (webhook.heldCount <= 0) return;
  try {
    const fresh = await deps.webhooks.get(webhook.tenantId, webhook.id);
    if (!fresh) return;
    await onFreshWebhook(deps, fresh, async (current) => {
      if (current.releaseToken === undefined || current.heldCount <= 0) return true;
      if (!takesDeliveries(current)) return true;
      const now = deps.now();
      if (releaseStepEndsBy(current.releaseAt, deps.config.deliveryTimeoutMs, RECHECK_MARGIN_MS) > now) return true;
      return beginRelease(deps, current, now);
    });
  } catch (error) {
    deps.logger.warn("Endpoint's time given back, and its held deliveries not released at once", {
      ...context({ tenantId: webhook.tenantId, webhookId: webhook.id }),
      error: String(error),
    });
  }
}

/** How far a recheck runs past the window it answers for: for the clocks of two workers, and a hold's item write. */
export const RECHECK_MARGIN_MS = 1_000;

/**
 * A delivery held, or counted for a gap marker, under a pause or drop switch is
 * released by the release that lifting the switch starts. But this worker read the
 * switch through its cache, up to `switchCacheMs` old: after a lift, that release may
 * have ended before this hold, and nothing would release it, nor every delivery held
 * behind it, until new traffic revived a chain 20 minutes on (CHAIN_LOST_AFTER_MS).
 * So a hold under a switch asks for a recheck: a message delayed past the end of the
 * current window of `switchCacheMs`, which reads the switches afresh and, if the switch
 * is gone and no release has stepped since, starts one. One per webhook and window
 * (a conditional write, which a container that saw the window taken skips), so a
 * long pause costs one message per window and webhook, only that webhook's, and no
 * delivery pays anything while no switch is in force.
 *
 * Rather than reading the switches afresh before each hold: that is a read per held
 * delivery, all on the one partition every stage's switch cache reads (a pause of one
 * busy webhook would slow everyone's switch reads), and it still races the lift; and
 * rather than a reconciler sweep, which would be minutes late and read every webhook.
 */
export async function expectLift(deps: DeliveryDeps, webhook: Webhook, now: number): Promise<void> {
  const windowMs = deps.config.switchCacheMs;
  if (!(await deps.sendBudgets.takeOnce(`recheck:${webhook.id}`, windowMs, now))) return;
  // Past every hold of this window: the holds that found it taken are answered for too.
  const { heldBefore, delaySeconds } = liftRecheck(now, windowMs, RECHECK_MARGIN_MS);
  await deps.queue.send([{ kind: 'recheck', tenantId: webhook.tenantId, webhookId: webhook.id, heldBefore }], delaySeconds);
}

/**
 * How often a webhook that held (or dropped) deliveries under a switch still in force is
 * rechecked: SQS's longest delay. The lift starts its release; but a lift that died after
 * marking the switch lifted (out of force for every reader) and before it started the
 * releases (its Lambda killed, DynamoDB or SQS failing it) leaves them to the DELETE sent
 * again. Not sent again, a webhook that gets no more deliveries kept what it held (and
 * owed its drop's gap markers) until the retention period removed them, counted by no one:
 * the reconciler rings a paused object once no pause stops it, but no webhook. So a recheck
 * that finds the switch still in force looks again this much later, one per webhook and
 * window, until the switch is gone: then it starts the release as for a cache's late hold.
 */
export const SWITCH_WATCH_MS = 15 * 60_000;

export async function recheck(deps: DeliveryDeps, message: RecheckMessage): Promise<DeliveryOutcome> {
  const webhook = await deps.webhooks.get(message.tenantId, message.webhookId);
  if (!webhook) return 'stale';
  if (actionForWebhook(await deps.switches.refresh(), webhook.tenantId, webhook.id) !== undefined) {
    // Still in force: lifting it starts the release, and this looks again in case the lift dies first.
    const now = deps.now();
    if (await deps.sendBudgets.takeOnce(`switch-watch:${webhook.id}`, SWITCH_WATCH_MS, now)) {
      // Answering for what was held before now: a lift comes after, and its release steps after that.
      const watch: RecheckMessage = { kind: 'recheck', tenantId: webhook.tenantId, webhookId: webhook.id, heldBefore: now };
      await deps.queue.send([watch], sqsDelay(SWITCH_WATCH_MS / 1000).delaySeconds);
    }
    return 'stale';
  }
  // Quarantined or disabled: a probe's success, or re-enabling, starts the release.
  if (!takesDeliveries(webhook)) return 'stale';
  // A release step that began after the holds saw them, and its chain goes on while anything is held or owed.
  if (releasedSince(webhook.releaseAt, message.heldBefore, RECHECK_MARGIN_MS)) return 'stale';
  // A chain that has not ended (an ended one removes its token), whose latest step began
  // before the holds, may still be sending its page: a chain started now would send that
  // page again, under other webhook-ids. Look again once that step has surely ended; if
  // its chain went on, its next step saw the holds.
  const now = deps.now();
  const stepEndsBy = releaseStepEndsBy(webhook.releaseAt, deps.config.deliveryTimeoutMs, RECHECK_MARGIN_MS);
  if (webhook.releaseToken !== undefined && stepEndsBy > now) {
    await deps.queue.send([message], sqsDelay((stepEndsBy - now) / 1000).delaySeconds);
    return 'waiting';
  }
  deps.metrics.count('ChainsRevived', 1, { chain: 'switch_lifted' });
  deps.logger.info('Held under a switch after it was lifted; releasing', context(message));
  await startRelease(deps, webhook);
  return 'released';
}
