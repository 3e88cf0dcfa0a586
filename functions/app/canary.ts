/**
 * The canary (SPEC §5): on a schedule it publishes two synthetic events (ticks),
 * through the public API, to an internal tenant whose webhook is sluice's own
 * receiver: one for each way an event goes through the pipeline (see canaryTicks).
 * The receiver verifies the signature and counts `CanaryDelivered` once both ticks of
 * a run have arrived; the "canary stale" alarm fires when no run has arrived end to
 * end in 5 minutes, so it pages even when every other metric is silent, and when only
 * one of the two paths is stuck (lease contention, say, which nothing else reports).
 */
import type { CanaryKeyStore } from '../adapters/canary-key.ts';
import { type CanaryPath, type CanaryState, type CanaryStore, type CanaryTenant, hasWebhook } from '../adapters/canary-store.ts';
import { signedPing } from '../core/deliveries.ts';
import { verifySignature } from '../core/signing.ts';
import type { LoggerPort, MetricsPort } from '../core/telemetry.ts';

/** The resource of the canary's webhook, and of its quiet tick. */
export const CANARY_RESOURCE = 'sluice-canary';
/** The resource of its leased tick, a child of CANARY_RESOURCE (so the one webhook gets it). */
export const CANARY_LEASED_RESOURCE = 'sluice-canary:leased';
export const CANARY_TYPE = 'sluice_canary.tick';
/** A tick counts as delivered when it arrived within this long of being sent (the canary-stale alarm's period). */
export const CANARY_ON_TIME_MS = 5 * 60_000;

export interface CanaryDeps {
  readonly store: Pick<CanaryStore, 'get' | 'save' | 'forgetKey' | 'forgetWebhook'>;
  /** The canary tenant's API key, kept apart from the store's item (adapters/canary-key.ts). */
  readonly keys: CanaryKeyStore;
  /** The API's base URL, ending before `/v1`. */
  readonly apiUrl: string;
  readonly adminKey: () => Promise<string>;
  /** Where the canary's webhook points: the canary receiver. */
  readonly receiverUrl: string;
  readonly metrics: MetricsPort;
  readonly logger: LoggerPort;
  readonly now: () => number;
}

/**
 * How many times a call refused by its key's throttle (429) is sent again, each after
 * the Retry-After it was answered (at most THROTTLED_WAIT_MAX_SECONDS). The canary's
 * tenant has the deployment's default throttle (tenantRatePerSecond, tenantBurst): with
 * a burst of 1, every run's second call (its ticks, after the look at its webhook)
 * came within the same second as its first and was refused, so no run ever published,
 * and canary-stale and the canary's errors alarm paged for good.
 */
const THROTTLED_RETRIES = 3;
const THROTTLED_WAIT_MAX_SECONDS = 5;

/** One call of the public API with a key; `body`, when given, is sent as JSON. */
async function call(
  method: 'GET' | 'POST' | 'PATCH' | 'DELETE',
  url: string,
  key: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  for (let retries = 0; ; retries++) {
    const response = await fetch(url, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await response.text();
    if (response.status === 429 && retries < THROTTLED_RETRIES) {
      const asked = Number(response.headers.get('retry-after'));
      const seconds = Number.isFinite(asked) && asked >= 1 ? Math.min(asked, THROTTLED_WAIT_MAX_SECONDS) : 1;
      await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
      continue;
    }
    return { status: response.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  }
}

const post = (url: string, key: string, body: unknown) => call('POST', url, key, body);

/** The canary tenant's key was refused (an admin rotated it, say): the run gives it a new one and ends. */
class KeyRefused extends Error {
  readonly tenantId: string;
  constructor(tenantId: string) {
    super(`The canary tenant ${tenantId}'s API key was refused`);
    this.tenantId = tenantId;
  }
}

/** Deletes the canary tenant's webhooks: before its one webhook is made, any there are orphans. */
async function deleteOrphans(deps: CanaryDeps, tenantId: string, apiKey: string): Promise<void> {
  const listed = await call('GET', `${deps.apiUrl}/v1/webhooks`, apiKey);
  if (listed.status === 401) throw new KeyRefused(tenantId);
  if (listed.status !== 200) throw new Error(`Canary webhook listing answered ${listed.status}; the next run tries again`);
  for (const webhook of (listed.json.data as Array<{ id: string }> | undefined) ?? []) {
    const deleted = await call('DELETE', `${deps.apiUrl}/v1/webhooks/${webhook.id}`, apiKey);
    if (deleted.status !== 204 && deleted.status !== 404) throw new Error(`Canary webhook deletion answered ${deleted.status}`);
    deps.logger.warn('Canary deleted a webhook an earlier run made but did not save', { webhook: webhook.id });
  }
}

/**
 * The canary's tenant and its API key. The key is kept before the tenant is saved: a
 * run that fails between the two leaves an unsaved tenant, and the next makes another
 * and keeps its key instead. An item saved with the key in it (before the key had a
 * store of its own) has it moved. Runs are one at a time (the function's reserved
 * concurrency is 1; the sandbox's schedule starts none while one is under way), so no
 * other run writes the key meanwhile.
 */
async function tenant(deps: CanaryDeps): Promise<{ state: CanaryTenant | CanaryState; apiKey: string }> {
  const saved = await deps.store.get();
  if (!saved) {
    const adminKey = await deps.adminKey();
    const created = await post(`${deps.apiUrl}/v1/admin/tenants`, adminKey, { name: 'sluice-canary' });
    if (created.status !== 201) throw new Error(`Canary tenant creation answered ${created.status}`);
    const apiKey = String(created.json.api_key);
    await deps.keys.put(apiKey);
    return { state: await deps.store.save({ tenantId: String(created.json.id) }), apiKey };
  }
  const { apiKey: inItem, ...state } = saved;
  if (inItem !== undefined) {
    if ((await deps.keys.get()) !== inItem) await deps.keys.put(inItem);
    await deps.store.forgetKey(state.tenantId);
    deps.logger.info('Canary moved its API key out of the control table', { tenant: state.tenantId });
    return { state, apiKey: inItem };
  }
  // Lost (a restored or recreated secret): its tenant is given a new key, as for a refused one.
  return { state, apiKey: (await deps.keys.get()) ?? (await renewKey(deps, state.tenantId, 'lost')) };
}

/**
 * The canary's setup, in two steps that each save what they made, so a run that fails
 * halfway is resumed by the next instead of starting over (a tenant and its usage plan
 * each time): its tenant, then its webhook. A new API key can take a while to work at
 * API Gateway: until it does, the webhook step fails and the next run tries again.
 */
async function setUp(deps: CanaryDeps): Promise<{ state: CanaryState; apiKey: string }> {
  const { state, apiKey } = await tenant(deps);
  if (hasWebhook(state)) return { state, apiKey };
  // A webhook an earlier run made but could not save (its answer was lost) signs with a
  // secret nobody kept: the receiver would refuse it until it is disabled, which pages.
  await deleteOrphans(deps, state.tenantId, apiKey);
  const webhook = await post(`${deps.apiUrl}/v1/webhooks`, apiKey, {
    resource: CANARY_RESOURCE,
    url: deps.receiverUrl,
    types: ['sluice_canary.*'],
    description: 'sluice canary',
  });
  if (webhook.status === 401) throw new KeyRefused(state.tenantId);
  if (webhook.status !== 201) throw new Error(`Canary webhook creation answered ${webhook.status}; the next run tries again`);
  const saved = await deps.store.save({
    tenantId: state.tenantId,
    webhookId: String(webhook.json.id),
    secret: String(webhook.json.secret),
  });
  if (!hasWebhook(saved)) throw new Error('Canary state lost its webhook');
  return { state: saved, apiKey };
}

/**
 * Puts the canary's webhook back in service when it is not: its receiver failing 5
 * times in a row (a broken deploy of it) quarantines it like any endpoint, and then
 * only probes, up to an hour apart, would find the receiver working again (3 days on,
 * nothing would: it is disabled), with canary-stale in alarm all the while. Its
 * deliveries test the pipeline, not a customer's endpoint: every run asks for them again,
 * which releases what it held. A webhook deleted by hand is forgotten, and made again;
 * one whose URL is not the receiver's any more is moved to it.
 * Answers whether the webhook is there (`gone` when it is not); a refused key is KeyRefused.
 */
async function keepWebhook(deps: CanaryDeps, state: CanaryState, apiKey: string): Promise<'kept' | 'gone'> {
  const url = `${deps.apiUrl}/v1/webhooks/${state.webhookId}`;
  const found = await call('GET', url, apiKey);
  if (found.status === 401) throw new KeyRefused(state.tenantId);
  if (found.status === 404) {
    await deps.store.forgetWebhook(state.webhookId);
    deps.logger.warn('Canary webhook is gone: making another', { tenant: state.tenantId, webhook: state.webhookId });
    return 'gone';
  }
  if (found.status !== 200) throw new Error(`Canary webhook lookup answered ${found.status}; the next run tries again`);
  const health = found.json.health as { state?: unknown } | undefined;
  // The receiver's URL can change under a kept webhook: a sandbox restarted on another
  // PORT with the same SLUICE_DATA_DIR, a receiver function replaced (a new function
  // URL). The old URL answers nothing, so the webhook is moved (its ping then goes to
  // the new one, signed with the secret the receiver keeps).
  const moved = found.json.url !== deps.receiverUrl;
  if (found.json.status === 'active' && health?.state !== 'quarantined' && !moved) return 'kept';
  // Not while its receiver still fails: re-enabled, the webhook's held ticks would each
  // use up their retries within minutes and end as dead letters (which page). A moved
  // webhook's new URL is pinged by the PATCH itself.
  if (!moved && !(await receiverAnswers(deps, state))) {
    deps.logger.warn('Canary receiver does not answer: its webhook stays as it is', {
      tenant: state.tenantId,
      webhook: state.webhookId,
      status: String(found.json.status),
      state: String(health?.state),
    });
    return 'kept';
  }
  const enabled = await call('PATCH', url, apiKey, { status: 'active', ...(moved && { url: deps.receiverUrl }) });
  if (enabled.status !== 200) throw new Error(`Canary webhook re-enabling answered ${enabled.status}; the next run tries again`);
  deps.logger.warn(moved ? 'Canary moved its webhook to its receiver' : 'Canary re-enabled its webhook', {
    tenant: state.tenantId,
    webhook: state.webhookId,
    status: String(found.json.status),
    state: String(health?.state),
    ...(moved && { from: String(found.json.url), to: deps.receiverUrl }),
  });
  return 'kept';
}

/**
 * Gives the canary's tenant a new API key when its own is refused (an admin rotated it,
 * a key that leaked, say: the new one went to the admin, not to the canary's key store)
 * or lost from the key store. Rotating makes a key only the canary knows; every earlier
 * one stays refused. A run that dies before keeping the key leaves it refused, and the
 * next rotates again.
 */
async function renewKey(deps: CanaryDeps, tenantId: string, why: 'refused' | 'lost'): Promise<string> {
  const rotated = await call('POST', `${deps.apiUrl}/v1/admin/tenants/${tenantId}/rotate-key`, await deps.adminKey());
  if (rotated.status === 404) {
    throw new Error(
      `The canary's tenant ${tenantId} is gone: delete the control table's canary item (pk "canary") and the next run makes a new tenant`,
    );
  }
  if (rotated.status !== 200) throw new Error(`Canary key rotation answered ${rotated.status}; the next run tries again`);
  const apiKey = String(rotated.json.api_key);
  await deps.keys.put(apiKey);
  deps.logger.warn(
    why === 'refused'
      ? "Canary's API key was refused (rotated by an admin?): it rotated its tenant's key again and keeps the new one"
      : "Canary's API key was not in its key store: it rotated its tenant's key and keeps the new one",
    { tenant: tenantId },
  );
  return apiKey;
}

/** Whether the receiver answers a signed `webhook.ping`, as its webhook's next delivery would be signed, with a 2xx. */
async function receiverAnswers(deps: CanaryDeps, state: CanaryState): Promise<boolean> {
  const { body, headers } = signedPing(state.webhookId, CANARY_RESOURCE, [state.secret], deps.now());
  try {
    const answer = await fetch(deps.receiverUrl, {
      method: 'POST',
      headers: { ...headers },
      body,
      redirect: 'manual',
      signal: AbortSignal.timeout(10_000),
    });
    await answer.arrayBuffer();
    return answer.status >= 200 && answer.status < 300;
  } catch {
    return false;
  }
}

/**
 * One scheduled run: publish the run's two ticks. A run whose tenant key is refused, at
 * any step, gives the tenant a new key and ends there.
 */
export async function runCanary(deps: CanaryDeps): Promise<void> {
  try {
    await publishOnce(deps);
  } catch (error) {
    if (!(error instanceof KeyRefused)) throw error;
    // Refused before or after its webhook was made: this run ends here; the next goes on with the new key.
    deps.metrics.count('CanaryPublishFailed');
    await renewKey(deps, error.tenantId, 'refused');
  }
}

/**
 * A run's two ticks, in one request, each on an object of its own so that neither
 * changes the other's path:
 * - `quiet`: one small event with no id, alone on an idle object. Ingest keeps it on the
 *   object's meta item and rings a quiet doorbell; the distributor publishes it in a
 *   quiet turn, with no lease, no slot and no commit.
 * - `leased`: an event with an id (an idempotency key), which ingest never keeps inline:
 *   it is written to its slot, and the turn that publishes it takes the object's lease,
 *   reads the slots and commits. A lease nobody can take (the hot-object incident's
 *   failure) stops it, and only it.
 * The leased tick names the quiet one's resource as its parent, so the canary's one
 * webhook gets both. The id is the run's own: no later run repeats it.
 */
function canaryTicks(sentAt: number): unknown[] {
  const data = (path: CanaryPath) => ({ sent_at: sentAt, path });
  return [
    { resource: CANARY_RESOURCE, type: CANARY_TYPE, data: data('quiet') },
    {
      resource: CANARY_LEASED_RESOURCE,
      parents: [CANARY_RESOURCE],
      type: CANARY_TYPE,
      data: data('leased'),
      id: `sluice-canary-${sentAt}`,
    },
  ];
}

type PublishResult = { status?: unknown; error?: { code?: unknown } };

/** The run itself: its setup, its webhook kept in service, and its ticks. */
async function publishOnce(deps: CanaryDeps): Promise<void> {
  let { state, apiKey } = await setUp(deps);
  if ((await keepWebhook(deps, state, apiKey)) === 'gone') ({ state, apiKey } = await setUp(deps));
  const ticks = canaryTicks(deps.now());
  const published = await post(`${deps.apiUrl}/v1/events`, apiKey, { events: ticks });
  // A 202 answers each event apart: one rejected (a storage failure, a full queue) was
  // not published, and without it no run of the canary's can arrive whole.
  const results = published.status === 202 ? ((published.json.events as PublishResult[] | undefined) ?? []) : [];
  const failed = ticks.findIndex((_, i) => results[i]?.status !== 'accepted' && results[i]?.status !== 'duplicate');
  // The tenant id in every run's log: on-call looks for it among the switches (runbook canary-stale).
  if (failed >= 0) {
    const result = results[failed];
    deps.metrics.count('CanaryPublishFailed');
    deps.logger.error('Canary publish failed', {
      tenant: state.tenantId,
      status: published.status,
      ...(result && { tick: failed === 0 ? 'quiet' : 'leased', result: String(result.status), code: String(result.error?.code) }),
    });
    return;
  }
  deps.metrics.count('CanaryPublished');
  deps.logger.info('Canary published', { tenant: state.tenantId });
}

type CanaryEvent = { type?: unknown; data?: { sent_at?: unknown; path?: unknown } | null };

/** The events of a body shaped as a delivery (`{"events":[{…}]}`), or undefined when it is not one. */
function canaryEvents(body: string): CanaryEvent[] | undefined {
  let payload: unknown;
  try {
    payload = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) return undefined;
  const events = (payload as { events?: unknown }).events ?? [];
  if (!Array.isArray(events)) return undefined;
  if (!events.every((e) => typeof e === 'object' && e !== null && !Array.isArray(e))) return undefined;
  return events as CanaryEvent[];
}

/** The canary receiver: verify, note, count, answer. Returns the HTTP status to answer with. */
export async function receiveCanary(
  deps: { readonly store: Pick<CanaryStore, 'get' | 'noteArrival'> } & Pick<CanaryDeps, 'metrics' | 'logger' | 'now'>,
  headers: { id: string | undefined; timestamp: string | undefined; signature: string | undefined },
  body: string,
): Promise<number> {
  const events = canaryEvents(body);
  // Not a delivery: the receiver is public (a function URL), and a body that threw here
  // would be a failed invocation, which pages on-call (canaryReceiver-errors).
  if (!events) return 400;
  const state = await deps.store.get();
  // The verification ping arrives before the webhook is saved: accept it unverified, count nothing.
  if (!state || !hasWebhook(state)) return events.every((e) => e.type === 'webhook.ping') ? 204 : 401;
  if (!verifySignature(state.secret, headers, body, Math.floor(deps.now() / 1000))) {
    deps.logger.warn('Canary receiver got a delivery with a bad signature');
    return 401;
  }
  // Only a tick that made the round trip within the alarm's period counts: a pipeline
  // running uniformly late must still turn canary-stale to ALARM.
  const ticks = events.filter((e) => e.type === CANARY_TYPE);
  const now = deps.now();
  let late = 0;
  for (const tick of ticks) {
    const sentAt = tick.data?.sent_at;
    if (typeof sentAt !== 'number' || now - sentAt > CANARY_ON_TIME_MS) {
      late++;
      continue;
    }
    // A tick with no path (sent by an earlier version, which had only the quiet one) proves one path alone.
    const path = tick.data?.path;
    if (path !== 'quiet' && path !== 'leased') continue;
    deps.metrics.count('CanaryTicks', 1, { path });
    // A run is delivered once both its ticks are: one path stuck (every lease refused,
    // say) must turn canary-stale to ALARM while the other still delivers.
    if (await deps.store.noteArrival(path, sentAt)) deps.metrics.count('CanaryDelivered');
  }
  if (late > 0) {
    deps.metrics.count('CanaryLate', late);
    deps.logger.warn('Canary tick arrived late', { late });
  }
  return 204;
}
