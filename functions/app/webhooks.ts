/**
 * Webhooks (SPEC §3 Webhooks): created only after the endpoint answers a signed
 * `webhook.ping`; the secret is shown once.
 */

import { setTimeout as sleep } from 'node:timers/promises';
import type { SwitchStore } from '../adapters/switch-store.ts';
import type { TenantStore } from '../adapters/tenant-store.ts';
import type { Sender } from '../adapters/webhook-sender.ts';
import type { WebhookStore } from '../adapters/webhook-store.ts';
import { eventCount, signedPing } from '../core/deliveries.ts';
import { ApiError } from '../core/errors.ts';
import { deliversTo, INITIAL_HEALTH } from '../core/health.ts';
import { newId } from '../core/ids.ts';
import { liveSecrets, type Webhook } from '../core/model.ts';
import { decideAttempt } from '../core/outcome.ts';
import { generateSecret } from '../core/signing.ts';
import type { ReplayWindow, WebhookInput, WebhookPatch } from '../core/validation.ts';
import { startRelease } from './delivery/chains.ts';
import { type DeliveryDeps, endpointRateOf } from './delivery/deps.ts';
import { applyHealth } from './delivery/health.ts';
import { countHeldGone, heldCountDrifted } from './delivery/release.ts';
import { switchId } from './switches.ts';

export interface WebhookServiceDeps {
  readonly webhooks: WebhookStore;
  readonly tenants: Pick<TenantStore, 'get'>;
  readonly send: Sender;
  readonly timeoutMs: number;
  readonly now: () => number;
  /**
   * The kill switches, to remove a deleted webhook's own (scope `webhook`).
   * @default none: a deleted webhook's switch stays until an admin lifts it
   */
  readonly switches?: Pick<SwitchStore, 'forget'>;
  /** The delivery stage's dependencies: health transitions, its stores and the deliver queue. */
  readonly delivery: DeliveryDeps;
  /** Most logged deliveries one replay sends again (MAX_REPLAY_DELIVERIES). */
  readonly maxReplayDeliveries?: number;
  /** Most bytes of events (JSON) one replay sends again (MAX_REPLAY_BYTES). */
  readonly maxReplayBytes?: number;
  /**
   * What one webhook's replays may read and send again in a window (`replayBudget`).
   * @default the most one replay sends, per the time its endpoint takes them at its rate
   */
  readonly replayBudget?: ReplayBudget;
  /** @default FORGET_BUDGET_MS */
  readonly forgetBudgetMs?: number;
}

/**
 * What one webhook's replays together may read and send again per `windowMs`: `units`,
 * each replay counting its deliveries or its events' bytes in REPLAY_UNIT_BYTES,
 * whichever is more.
 */
export interface ReplayBudget {
  readonly units: number;
  readonly windowMs: number;
}

const ROTATION_OVERLAP_MS = 24 * 3_600_000;

/**
 * The most a webhook's creation, or a change of its types, waits for the `by_resource`
 * index to show it before answering (see `#untilIndexed`). DynamoDB updates an index a
 * little after the write, usually well under a second.
 */
export const INDEX_WAIT_MS = 3_000;

/** URL verifications (pings) one tenant may start per ping timeout: so about as many at once, at most twice that. */
export const VERIFICATIONS_PER_TENANT = 20;
/**
 * Most replaced secrets that keep signing at once (each for its own 24 h): a delivery
 * carries one signature per live secret. Past this, the oldest stops signing early.
 */
export const MAX_PREVIOUS_SECRETS = 5;
/** The `next` token of a page of dead letters: where the page after starts (opaque to callers). */
function deadLetterCursor(sk: string): string {
  return Buffer.from(sk).toString('base64url');
}

/** The dead letter key an `after` token names; a token that is not one is a 400. */
function deadLetterCursorKey(after: string): string {
  const sk = Buffer.from(after, 'base64url').toString();
  if (!/^\d{15}#msg_[0-9a-z]{19}$/.test(sk)) {
    throw new ApiError('invalid_request', 'after must be the next token of an earlier page of dead letters.');
  }
  return sk;
}

/** Most logged deliveries one replay request sends again (up to 100 events each). */
export const MAX_REPLAY_DELIVERIES = 2_000;
/**
 * Most bytes of events (their JSON) one replay request reads and sends again: 2,000
 * deliveries of up to 256 KiB each would be 500 MiB, past the API function's memory
 * (512 MB) and what it can send to SQS within its 29 s.
 */
export const MAX_REPLAY_BYTES = 16 * 1024 * 1024;
/** The events' bytes that count as one delivery of a webhook's replay budget: a largest replay's bytes per its deliveries. */
export const REPLAY_UNIT_BYTES = MAX_REPLAY_BYTES / MAX_REPLAY_DELIVERIES;

/** The Retry-After of a dead-letter replay refused while another of the same webhook is under way (it takes seconds). */
export const REPLAY_UNDER_WAY_RETRY_SECONDS = 5;

/**
 * A webhook's replay budget by default: a largest replay (MAX_REPLAY_DELIVERIES) per the
 * time its endpoint takes that many at its rate (40 s at 50 a second). Each replay's
 * deliveries go to the shared deliver queue at once, and each call reads its window
 * from the log: unbudgeted, a tenant could send one replay after another (500 a second
 * at its default throttle, 1,000,000 deliveries a second) far past what its endpoints
 * take, filling the queue every tenant's deliveries wait in.
 */
export function defaultReplayBudget(endpointRatePerSecond: number): ReplayBudget {
  return { units: MAX_REPLAY_DELIVERIES, windowMs: Math.ceil((MAX_REPLAY_DELIVERIES / endpointRatePerSecond) * 1000) };
}

/**
 * The most bytes of dead letters (their deliveries' JSON) a page of them reads: what one
 * DynamoDB query reads. A page shows only its letters' event ids and types, but reads
 * each letter whole (up to 256 KiB of events), consistently: 100 of the largest would
 * be 25 MiB and 6,400 read units a request, in the table every tenant's authorizer reads.
 */
export const DEAD_LETTER_PAGE_BYTES = 1024 * 1024;

/**
 * The most a page of webhooks takes in the API function's answer, which is at most 6 MB
 * (the body is a JSON string in it, so each quote and backslash is escaped again).
 */
export const MAX_LIST_BYTES = 4 * 1024 * 1024;

/** A webhook as the API shows it: never its secrets. */
export function webhookView(webhook: Webhook) {
  return {
    id: webhook.id,
    resource: webhook.resource,
    url: webhook.url,
    types: webhook.types,
    description: webhook.description,
    status: webhook.status,
    // null: the deployment's endpointRatePerSecond.
    rate_per_second: webhook.ratePerSecond ?? null,
    created_at: webhook.createdAt,
    updated_at: webhook.updatedAt,
  };
}

/** The webhook with its endpoint health (SPEC §3 GET /v1/webhooks/{id}). */
export function webhookDetailView(webhook: Webhook) {
  const { health } = webhook;
  return {
    ...webhookView(webhook),
    health: {
      state: webhook.status === 'disabled' ? 'disabled' : health.state,
      consecutive_failures: health.consecutiveFailures,
      last_success_at: health.lastSuccessAt ?? null,
      last_failure: health.lastFailure ?? null,
      held: webhook.heldCount,
    },
  };
}

/**
 * Removes everything kept for a deleted webhook: its endpoint's pace, and its held
 * deliveries and overflow counts, every page of them while `more` (asked after each
 * page) says so, throwing if DynamoDB still left some unprocessed after a few tries
 * (TTL removes those, late). Answers how many held events went with it, and whether
 * every page went: events only, as a held `sluice.gap` marker stands for events counted
 * when they were dropped.
 *
 * The pace first: deliveries waiting for shares of it look at it (`PaceStore.givenBack`),
 * and finding it gone they are dropped at their next look, 15 minutes at most, where
 * they went round the shared deliver queue until their times (a slow endpoint's
 * backlog, days ahead) to be dropped only then.
 */
export async function forgetWebhook(
  stores: Pick<DeliveryDeps, 'paces' | 'held' | 'gaps'>,
  webhookId: string,
  more?: () => boolean,
): Promise<{ events: number; deliveries: number; complete: boolean }> {
  await stores.paces.giveBack(webhookId);
  const held = await stores.held.forget(webhookId, more);
  const counts = await stores.gaps.forget(webhookId, more);
  return { events: held.events, deliveries: held.deliveries, complete: held.complete && counts };
}

/**
 * How long a webhook's deletion removes what it held before it answers, leaving the rest
 * to expire with the retention period. A full held cap of large deliveries (10,000 of up
 * to 256 KiB, gigabytes in one partition, its deletes throttled at its 1,000 WCU a
 * second) took minutes: the DELETE ran past API Gateway's 29 s into a 504 (the webhook
 * gone, so the one sent again answered 404), and the deletion's later steps (removing
 * its kill switch, which no TTL removes) never ran. A tenant's deletion deletes its
 * webhooks one after the other within its own 15 s, each within this.
 */
export const FORGET_BUDGET_MS = 5_000;

export class WebhookService {
  readonly #deps: WebhookServiceDeps;

  constructor(deps: WebhookServiceDeps) {
    this.#deps = deps;
  }

  async create(tenantId: string, input: WebhookInput) {
    const { webhooks, tenants, now } = this.#deps;
    const tenant = await tenants.get(tenantId);
    if (!tenant) throw new ApiError('unauthorized', 'The API key does not belong to a tenant.');
    const at = new Date(now()).toISOString();
    const webhook: Webhook = {
      id: newId('wh', now()),
      tenantId,
      resource: input.resource,
      url: input.url,
      types: input.types,
      description: input.description,
      ...(input.ratePerSecond !== undefined && { ratePerSecond: input.ratePerSecond }),
      status: 'active',
      secrets: [generateSecret()],
      previousSecretsExpireAt: [],
      health: INITIAL_HEALTH,
      healthVersion: 0,
      heldCount: 0,
      probeToken: undefined,
      releaseToken: undefined,
      createdAt: at,
      updatedAt: at,
    };
    const { repaired } = await webhooks.reservePlace(tenantId, tenant.limits.max_webhooks);
    if (repaired) {
      this.#deps.delivery.logger.warn("The tenant's webhook count was more than its webhooks: set right", {
        tenant: tenantId,
        ...repaired,
      });
    }
    try {
      await this.#verify(webhook, webhook.url);
      await webhooks.put(webhook);
    } catch (error) {
      // The answer is the create's own error (a 422 stays a 422); a place not given back
      // is set right by the next create that finds the count full (see `reservePlace`).
      await webhooks.releasePlace(tenantId).catch((releaseError: unknown) =>
        this.#deps.delivery.logger.error("Webhook not stored, and its place in the tenant's max_webhooks not given back", {
          tenant: tenantId,
          error: releaseError,
        }),
      );
      throw error;
    }
    if (await this.#tenantGone(tenantId)) {
      // Its deletion began while this webhook was being verified, and so may have found
      // no webhook to delete: this one goes as that deletion would have taken it (the
      // place it took went with the tenant's item).
      await this.#discard(tenantId, webhook.id, () => undefined);
      throw new ApiError('unauthorized', 'The API key does not belong to a tenant.');
    }
    await this.#untilIndexed(webhook);
    return { ...webhookView(webhook), secret: webhook.secrets[0] as string };
  }

  /** Whether the tenant is gone or being deleted, read again after a webhook is stored (a failed read: not known gone). */
  async #tenantGone(tenantId: string): Promise<boolean> {
    try {
      return (await this.#deps.tenants.get(tenantId)) === undefined;
    } catch (error) {
      this.#deps.delivery.logger.warn('The tenant of a webhook just stored could not be read again', { tenant: tenantId, error });
      return false;
    }
  }

  /**
   * A page of the tenant's webhooks, oldest first: `after` is the last id of the page
   * before. At most `limit`, and only as many as fit in MAX_LIST_BYTES: 500 of the
   * largest webhooks (a 2,000-character URL, 50 types of 200) would be over 6 MB, past
   * what one Lambda answer may hold, and every such page would be a 502.
   */
  async list(tenantId: string, limit: number, after?: string) {
    const page = await this.#deps.webhooks.page(tenantId, limit, after);
    const data: ReturnType<typeof webhookView>[] = [];
    let bytes = 0;
    for (const webhook of page.webhooks) {
      const view = webhookView(webhook);
      // Counted as the answer carries it: escaped a second time, in the answer's body string.
      bytes += Buffer.byteLength(JSON.stringify(JSON.stringify(view)));
      if (data.length > 0 && bytes > MAX_LIST_BYTES) return { data, has_more: true };
      data.push(view);
    }
    return { data, has_more: page.hasMore };
  }

  async get(tenantId: string, id: string) {
    return webhookDetailView(await this.#find(tenantId, id));
  }

  /**
   * Changes a webhook. `status: active` re-enables a quarantined or disabled
   * webhook and releases what it held; `status: disabled` stops deliveries (they
   * are held, up to the cap, until it is re-enabled).
   */
  async update(tenantId: string, id: string, patch: WebhookPatch) {
    let current = await this.#find(tenantId, id);
    if (patch.url !== undefined && patch.url !== current.url) await this.#verify(current, patch.url);
    const now = this.#deps.now();
    const { status, ...changes } = patch;
    // The same URL again is no change (no ping, and the endpoint's Retry-After stands).
    const rest = changes.url === current.url ? { ...changes, url: undefined } : changes;
    if (Object.values(rest).some((value) => value !== undefined)) {
      // A new URL is another endpoint: its deliveries do not wait behind the shares of
      // the old one's slow pace (slow answers may have spread them far ahead). Only a slow
      // one's: the shares of an endpoint paced at its whole rate are the new URL's pace as
      // well (its backlog goes there at them), and given back, new deliveries would go
      // beside them at the whole rate again, twice the rate for up to a minute. Before
      // the change, so that a failure here leaves the webhook as it was. Slow as it is
      // now, read again: the new URL's verification ping can take seconds (up to the
      // delivery timeout), in which the old one may have turned slow and its backlog
      // taken minutes of its time at the slow pace, or turned quick and had it given back.
      if (rest.url !== undefined && (await this.#deps.webhooks.get(tenantId, id))?.slowMs !== undefined) {
        await this.#deps.delivery.paces.giveBack(id);
      }
      const updated = await this.#deps.webhooks.update(tenantId, id, rest, new Date(now).toISOString());
      if (!updated) throw notFound(id);
      current = updated;
      if (rest.types !== undefined) await this.#untilIndexed(current);
    }
    if (rest.url !== undefined && status !== 'disabled' && current.status === 'active' && current.health.state === 'failing') {
      // The new URL just answered its verification ping: a success. The old URL's failures
      // are not the new one's, which would otherwise be quarantined after fewer failures of
      // its own, and get one attempt an interval until a delivery to it succeeded.
      current = await applyHealth(this.#deps.delivery, current, { type: 'success', now });
    }
    if (status === 'active' && (current.status !== 'active' || current.health.state !== 'healthy' || current.heldCount > 0)) {
      current = await applyHealth(this.#deps.delivery, current, { type: 'reenabled', now });
    } else if (status === 'disabled' && current.status !== 'disabled') {
      current = await applyHealth(this.#deps.delivery, current, { type: 'disabled_by_owner', now });
    } else if (rest.url !== undefined && status === undefined && current.status === 'active' && current.health.state === 'quarantined') {
      // The new URL just answered its verification ping: a probe that succeeded. Waiting
      // for the next probe (up to an hour apart, or the old URL's Retry-After) would keep
      // holding deliveries to an endpoint known to answer.
      current = await applyHealth(this.#deps.delivery, current, { type: 'probe_succeeded', now });
    } else if (
      rest.url !== undefined &&
      status === undefined &&
      current.status === 'active' &&
      deliversTo(current.health) &&
      current.heldCount > 0
    ) {
      // Its release chain may be waiting (up to 15 minutes a step) for the Retry-After the
      // old URL asked for, with every new delivery held behind it: a new chain (its token
      // ends the old one) sends to the new URL now.
      await startRelease(this.#deps.delivery, current);
    }
    return webhookDetailView((await this.#deps.webhooks.get(tenantId, id)) ?? current);
  }

  async delete(tenantId: string, id: string): Promise<void> {
    const placeKept = (error: unknown) =>
      this.#deps.delivery.logger.error("Webhook deleted, but its place in the tenant's max_webhooks not given back", {
        tenant: tenantId,
        webhook: id,
        error,
      });
    if (!(await this.#discard(tenantId, id, placeKept))) throw notFound(id);
  }

  /** Deletes a webhook and what it holds: false when there was none. */
  async #discard(tenantId: string, id: string, placeKept: (error: unknown) => void): Promise<boolean> {
    const deleted = await this.#deps.webhooks.delete(tenantId, id, placeKept);
    if (!deleted) return false;
    // What it held goes with it, counted as deliveries in flight to it are.
    try {
      const started = this.#deps.now();
      const budget = this.#deps.forgetBudgetMs ?? FORGET_BUDGET_MS;
      const forgotten = await forgetWebhook(this.#deps.delivery, id, () => this.#deps.now() - started < budget);
      if (forgotten.events > 0) {
        this.#deps.delivery.metrics.count('EventsDiscardedByOwner', forgotten.events, { reason: 'webhook_deleted' });
      }
      // Held deliveries its item counted and the deletion did not find: TTL removed them,
      // on a webhook no release read again (disabled, and never enabled), which only a
      // release counted. Counted as a release counts them (`dropLostHeld`).
      const { held } = deleted;
      if (forgotten.complete && held && held.count > forgotten.deliveries && !heldCountDrifted(held.since, started)) {
        countHeldGone(this.#deps.delivery, { tenantId, webhookId: id }, held.count, forgotten.deliveries);
      }
      if (!forgotten.complete) {
        // Nothing releases what a deleted webhook held, so nothing is sent: only its
        // storage lasts (held deliveries a week at most, overflow counts a year), and no
        // count of events discarded covers what was left.
        this.#deps.delivery.logger.warn('Held deliveries of a deleted webhook left to expire with the retention period: out of time', {
          tenant: tenantId,
          webhook: id,
          removedEvents: forgotten.events,
        });
      }
    } catch (error) {
      // The webhook is gone all the same, and so answered: a 500 would be tried again
      // into a 404. Nothing releases what a deleted webhook held; the rest of it
      // expires with the retention period (TTL).
      this.#deps.delivery.logger.error('Held deliveries of a deleted webhook not all removed; they expire with the retention period', {
        tenant: tenantId,
        webhook: id,
        error,
      });
    }
    // Its switch stops nothing any more, and no TTL removes it: every stage would read it,
    // and on-call see it in force, until an admin lifted it. A webhook id is never reused.
    await this.#deps.switches?.forget(switchId({ scope: 'webhook', tenant: tenantId, target: id })).catch((error: unknown) =>
      this.#deps.delivery.logger.error("A deleted webhook's switch not removed; DELETE /v1/admin/switches/{id} lifts it", {
        tenant: tenantId,
        webhook: id,
        error,
      }),
    );
    return true;
  }

  /**
   * A new signing secret; the one it replaces keeps signing too for 24 h, and so does
   * every secret replaced before it within its own 24 h: a second rotation (or the
   * SDK trying again a rotation whose answer was lost) does not cut short the overlap
   * that receivers still on an older secret were promised.
   */
  async rotateSecret(tenantId: string, id: string): Promise<{ secret: string }> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const current = await this.#find(tenantId, id);
      const secret = generateSecret();
      const now = this.#deps.now();
      const [replaced, ...older] = current.secrets;
      const stillSigning = older.flatMap((s, i) => {
        const expiresAt = current.previousSecretsExpireAt[i] ?? 0;
        return now < expiresAt ? [{ secret: s, expiresAt }] : [];
      });
      const previous = [
        ...(replaced === undefined ? [] : [{ secret: replaced, expiresAt: now + ROTATION_OVERLAP_MS }]),
        ...stillSigning,
      ].slice(0, MAX_PREVIOUS_SECRETS);
      if (await this.#deps.webhooks.rotateSecret(current, secret, previous, new Date(now).toISOString())) {
        return { secret };
      }
    }
    throw new ApiError('conflict', 'The secret was being rotated by another request; try again.');
  }

  async attempts(tenantId: string, id: string, limit: number) {
    await this.#find(tenantId, id);
    return this.#deps.delivery.deliveryLog.attempts(id, limit, this.#deps.now());
  }

  /**
   * Sends again every event logged for the webhook in the window, once each. At most
   * MAX_REPLAY_DELIVERIES deliveries and MAX_REPLAY_BYTES of events a request, so a
   * replay ends well within the API's timeout and memory; a larger window is refused
   * before anything is sent, naming where to split it. A webhook's replays together
   * take from its replay budget (429 once it is spent).
   */
  async replay(tenantId: string, id: string, window: ReplayWindow): Promise<number> {
    const webhook = await this.#find(tenantId, id);
    const now = this.#deps.now();
    const until = window.until ?? now;
    // The validator compares since with a given until; only here is "now" known.
    if (window.since >= until) {
      throw new ApiError('invalid_request', `since must be earlier than ${window.until === undefined ? 'now' : 'until'}`);
    }
    const max = this.#deps.maxReplayDeliveries ?? MAX_REPLAY_DELIVERIES;
    const maxBytes = this.#deps.maxReplayBytes ?? MAX_REPLAY_BYTES;
    const { sendBudgets, deliveryLog } = this.#deps.delivery;
    // The webhook's budget is taken before the log is read, as much of it as one replay
    // may use, and what the replay did not read is given back after: calls at once
    // share the window's budget rather than each see it unspent.
    const { budget, budgetKey, spent, settle } = this.#replayBudget(webhook, now);
    const whole = Math.min(max, budget.units);
    const grant = await sendBudgets.takeUpTo(budgetKey, whole, budget.units, budget.windowMs, now);
    if (grant.taken === 0) throw spent();
    // A read that failed (DynamoDB throttled it, say) sent nothing: its take is given
    // back, or the caller's next try would be refused for the rest of the window after a
    // replay that never happened.
    let used = 0;
    let logged: Awaited<ReturnType<typeof deliveryLog.logged>>;
    try {
      logged = await deliveryLog.logged(webhook.id, { since: window.since, until }, now, {
        deliveries: grant.taken,
        bytes: grant.taken >= whole ? maxBytes : Math.min(maxBytes, grant.taken * REPLAY_UNIT_BYTES),
      });
      // What was read counts, sent or not (a window refused below was read all the same).
      used = Math.max(logged.deliveries.length, Math.ceil(logged.bytes / REPLAY_UNIT_BYTES));
    } finally {
      await settle(grant, used);
    }
    // A window larger than what is left of the budget waits for the next, not split.
    if (logged.more && grant.taken < whole) throw spent();
    if (logged.more) {
      const split = new Date(logged.nextAt ?? until).toISOString();
      const size = maxBytes >= 1024 * 1024 ? `${Math.floor(maxBytes / (1024 * 1024))} MiB` : `${maxBytes} bytes`;
      throw new ApiError(
        'limit_exceeded',
        `More than ${max} deliveries, or ${size} of events, were logged in this window: replay it in parts, e.g. until ${split}, then since ${split}.`,
      );
    }
    // A delivery that was released again after a failed release is logged twice: each event is replayed once.
    const seen = new Set<string>();
    const batches = logged.deliveries
      .map((events) => events.filter((e) => !seen.has(e.id) && seen.add(e.id)))
      .filter((events) => events.length > 0);
    // Marked as a replay's: logged again, they would be in every later window too (see `replay` in the model).
    const messages = batches.map((events) => ({
      deliveryId: newId('msg', now),
      tenantId,
      webhookId: webhook.id,
      events,
      attempt: 1,
      replay: true,
    }));
    await this.#deps.delivery.queue.send(messages);
    return batches.reduce((sum, events) => sum + events.length, 0);
  }

  /**
   * A page of the webhook's dead letters (deliveries that used up their retries), in the
   * order their oldest events were accepted: each with its events' ids and types (not
   * their data, which a page of 100 could make too large to answer), `next` for the
   * page after: at most `limit` of them, and fewer once DEAD_LETTER_PAGE_BYTES are read,
   * or once it has passed DEAD_LETTER_EXPIRED_BYTES of letters past the retention period
   * that TTL has not deleted yet (then short, even empty, with `next` past them).
   */
  async deadLetters(tenantId: string, id: string, limit: number, after: string | undefined) {
    const webhook = await this.#find(tenantId, id);
    const page = await this.#deps.delivery.deadLetters.page(webhook.id, this.#deps.now(), limit, {
      bytes: DEAD_LETTER_PAGE_BYTES,
      ...(after !== undefined && { afterSk: deadLetterCursorKey(after) }),
    });
    return {
      data: page.letters.map(({ reason, message }) => ({
        delivery_id: message.deliveryId,
        attempts: message.attempt,
        reason,
        events: message.events.map((e) => ({
          id: e.id,
          ...('seq' in e && { seq: e.seq }),
          resource: e.resource,
          type: e.type,
          created_at: e.created_at,
        })),
      })),
      has_more: page.more,
      ...(page.more && page.lastSk !== undefined && { next: deadLetterCursor(page.lastSk) }),
    };
  }

  /**
   * Sends every dead letter of the webhook again, oldest first, each as the delivery it
   * was (its `msg_` id, so a subscriber that did take it can tell), with a new retry
   * budget, and removes it once sent: a second call sends only what came since. At most
   * MAX_REPLAY_DELIVERIES deliveries and MAX_REPLAY_BYTES of them a call, as `replay`,
   * and from the same budget (429 once it is spent); one at a time per webhook (429
   * while another is under way); `has_more` says to call again. Letters past the
   * retention period that TTL has not deleted yet are removed as a call passes them, up
   * to DEAD_LETTER_EXPIRED_BYTES of them a call (which may then send none, with `has_more`).
   */
  async replayDeadLetters(tenantId: string, id: string): Promise<{ deliveries: number; events: number; has_more: boolean }> {
    const webhook = await this.#find(tenantId, id);
    const now = this.#deps.now();
    const max = this.#deps.maxReplayDeliveries ?? MAX_REPLAY_DELIVERIES;
    const maxBytes = this.#deps.maxReplayBytes ?? MAX_REPLAY_BYTES;
    const { deadLetters, queue, sendBudgets } = this.#deps.delivery;
    // One replay of a webhook's dead letters at a time: a letter stays a dead letter until
    // the replay that read it has sent and removed it, so replays sent at once each read
    // and sent the same letters (four at once sent each four times).
    const hold = await deadLetters.holdForReplay(webhook.id, now);
    if (hold === undefined) {
      throw new ApiError(
        'rate_limited',
        "Another replay of this webhook's dead letters is under way; send again once it has answered.",
        REPLAY_UNDER_WAY_RETRY_SECONDS,
      );
    }
    try {
      // From the webhook's replay budget, as a replay of a window is: each call sends up
      // to 2,000 deliveries to the deliver queue every tenant's deliveries wait in, and
      // calls one after another, following has_more, did so as fast as the throttle allowed.
      const { budget, budgetKey, spent, settle } = this.#replayBudget(webhook, now);
      const whole = Math.min(max, budget.units);
      const grant = await sendBudgets.takeUpTo(budgetKey, whole, budget.units, budget.windowMs, now);
      if (grant.taken === 0) throw spent();
      let used = 0;
      try {
        const page = await deadLetters.page(webhook.id, now, grant.taken, {
          bytes: grant.taken >= whole ? maxBytes : Math.min(maxBytes, grant.taken * REPLAY_UNIT_BYTES),
        });
        // What was read counts, sent or not, as a replay's read does.
        const bytes = page.letters.reduce((sum, letter) => sum + Buffer.byteLength(JSON.stringify(letter.message)), 0);
        used = Math.max(page.letters.length, Math.ceil(bytes / REPLAY_UNIT_BYTES));
        // Each as the delivery it was, less what its last attempts left on it (waits, shares),
        // and marked as this replay's, so that its dead letter, should it fail again before
        // the one it was sent from is removed, replaces that one, which is then left.
        const replayedAt = this.#deps.now();
        const messages = page.letters.map(({ message: { deliveryId, tenantId: owner, webhookId, events } }) => ({
          deliveryId,
          tenantId: owner,
          webhookId,
          events,
          attempt: 1,
          replayedAt,
          replay: true,
        }));
        // Sent before they are removed: a call that fails between sends some twice, never none.
        await queue.send(messages);
        await Promise.all(page.letters.map((letter) => deadLetters.remove(webhook.id, letter.sk, letter.replayedAt)));
        // And what it passed over as past the retention period, which TTL deletes days
        // late: the next call, which reads from the first letter again, reads on past them.
        // Not a failure of the replay, whose deliveries are sent: left, the next call passes them again.
        await deadLetters.removeExpired(webhook.id, page.expired, now).catch((error: unknown) =>
          this.#deps.delivery.logger.warn(
            'Dead letters past the retention period were not all removed by a replay: the next replay reads past them again',
            {
              tenant: tenantId,
              webhook: webhook.id,
              error,
            },
          ),
        );
        return {
          deliveries: messages.length,
          events: messages.reduce((sum, m) => sum + eventCount(m.events), 0),
          has_more: page.more,
        };
      } finally {
        await settle(grant, used);
      }
    } finally {
      // Only once its letters are removed. Left (DynamoDB failing), it runs out after REPLAY_HOLD_MS.
      await deadLetters.releaseReplayHold(webhook.id, hold).catch((error: unknown) =>
        this.#deps.delivery.logger.warn(
          "A webhook's dead letters were not released by their replay: the next replay waits up to a minute",
          {
            tenant: tenantId,
            webhook: webhook.id,
            error,
          },
        ),
      );
    }
  }

  /**
   * The webhook's replay budget (shared by its replays of windows and of dead letters),
   * its key, the refusal once it is spent, and `settle`, which gives back what a replay
   * took and did not use. At the webhook's own rate where its owner set one: what it
   * releases of a held backlog keeps up with what its replays send.
   */
  #replayBudget(webhook: Webhook, now: number) {
    const budget = this.#deps.replayBudget ?? defaultReplayBudget(endpointRateOf(this.#deps.delivery, webhook));
    const waitSeconds = Math.ceil((budget.windowMs - (now % budget.windowMs)) / 1000);
    const spent = () =>
      new ApiError(
        'rate_limited',
        `A webhook's replays read and send at most ${budget.units} deliveries in ${budget.windowMs / 1000} s (about what its endpoint takes at its rate), and this one's are spent for now; send again in ${waitSeconds} s.`,
        waitSeconds,
      );
    const budgetKey = `replay:${webhook.id}`;
    // Gives back what a replay took and did not use. A correction that fails leaves the
    // whole take counted, never less than was read: the replay goes on, where failing it
    // after its read would also refuse its retry.
    const settle = (grant: { taken: number; window: number }, used: number) =>
      this.#deps.delivery.sendBudgets.adjust(budgetKey, budget.windowMs, grant.window, used - grant.taken).catch((error: unknown) =>
        this.#deps.delivery.logger.warn("A webhook's replay budget was not corrected: its window counts the whole take", {
          tenant: webhook.tenantId,
          webhook: webhook.id,
          error,
        }),
      );
    return { budget, budgetKey, spent, settle };
  }

  async #find(tenantId: string, id: string): Promise<Webhook> {
    const webhook = await this.#deps.webhooks.get(tenantId, id);
    if (!webhook) throw notFound(id);
    return webhook;
  }

  /**
   * Waits, at most INDEX_WAIT_MS, until the `by_resource` index that the distributor's
   * fan-out reads shows the webhook as just stored, with its types. DynamoDB updates an
   * index a little after the write it follows: an event published as soon as the API
   * answered would otherwise be fanned out without the webhook (or by its old types) and
   * never reach it. Past the wait, or when the index cannot be read, the answer goes
   * anyway (the webhook is stored; the index shows it soon) and the wait is logged.
   */
  async #untilIndexed(webhook: Pick<Webhook, 'tenantId' | 'id' | 'resource' | 'types'>): Promise<void> {
    const started = performance.now();
    const ctx = { tenant: webhook.tenantId, webhook: webhook.id };
    try {
      for (let pause = 20; ; pause = Math.min(2 * pause, 200)) {
        const listed = await this.#deps.webhooks.onResource(webhook.tenantId, webhook.resource);
        const shows = (types: readonly string[]) =>
          listed.some((s) => s.id === webhook.id && JSON.stringify(s.types) === JSON.stringify(types));
        // Shown: the subscriptions version is bumped again before the answer. A distributor
        // turn that looked the resource up between the write's bump and now (a busy
        // resource's next turn, most likely) had the index without the webhook, or with its
        // old types, and keeps that lookup until the index settles, seconds after the first
        // bump (SubscriptionCache, INDEX_SETTLE_MS): events published after this answer
        // missed the webhook meanwhile. Of an older version now, that lookup is not used again.
        if (shows(webhook.types)) return await this.#deps.webhooks.indexShows(webhook.tenantId);
        if (pause > 20) {
          // Not yet: the webhook as stored now, which another change (or its deletion) may
          // have overtaken since this one was written. Its index entry is what to wait for.
          const stored = await this.#deps.webhooks.get(webhook.tenantId, webhook.id);
          if (!stored) return;
          if (shows(stored.types)) return await this.#deps.webhooks.indexShows(webhook.tenantId);
        }
        const waited = performance.now() - started;
        if (waited >= INDEX_WAIT_MS) {
          this.#deps.delivery.logger.warn('The webhook index did not show a webhook in time: events published now may miss it', {
            ...ctx,
            waited_ms: Math.round(waited),
          });
          return;
        }
        await sleep(Math.min(pause, INDEX_WAIT_MS - waited));
      }
    } catch (error) {
      this.#deps.delivery.logger.warn('The webhook index could not be read to see a webhook in it', { ...ctx, error });
    }
  }

  /** Sends the signed `webhook.ping`; anything but a 2xx in time refuses the URL. */
  async #verify(webhook: Webhook, url: string): Promise<void> {
    const now = this.#deps.now();
    // Each ping may hold its request (an API invocation) for the whole timeout: a tenant
    // sending URL changes to an endpoint that never answers would otherwise hold as many
    // as its throttle lets through, out of the concurrency every tenant's requests share.
    const { sendBudgets } = this.#deps.delivery;
    if (!(await sendBudgets.takeSlot(`verify:${webhook.tenantId}`, VERIFICATIONS_PER_TENANT, this.#deps.timeoutMs, now))) {
      throw new ApiError(
        'rate_limited',
        `At most ${VERIFICATIONS_PER_TENANT} webhook URLs of a tenant are verified in ${this.#deps.timeoutMs / 1000} s; send again shortly.`,
        Math.ceil(this.#deps.timeoutMs / 1000),
      );
    }
    // Signed as deliveries are: a previous secret past its overlap no longer signs.
    const { body, headers } = signedPing(webhook.id, webhook.resource, liveSecrets(webhook, now), now);
    const result = await this.#deps.send({ url, headers: { ...headers }, body, timeoutMs: this.#deps.timeoutMs });
    if (result.error === 'forbidden_address' || result.error === 'https_required') {
      throw new ApiError(
        'invalid_request',
        'url must be https and resolve only to public addresses (no private, loopback, link-local or metadata ones).',
      );
    }
    if (decideAttempt(result.statusCode) !== 'delivered') {
      const answer = result.statusCode === undefined ? result.error : `HTTP ${result.statusCode}`;
      throw new ApiError(
        'endpoint_verification_failed',
        `The endpoint did not accept the signed webhook.ping (${answer}); it must answer 2xx within ${this.#deps.timeoutMs} ms.`,
      );
    }
  }
}

function notFound(id: string): ApiError {
  return new ApiError('not_found', `No webhook ${id} exists for this tenant.`);
}
