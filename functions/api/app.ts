/**
 * The HTTP API (SPEC §3) as one Hono app. The same app object serves API Gateway
 * (through hono/aws-lambda) and the sandbox (through @hono/node-server); only the
 * way it learns the caller differs, so it takes an `authenticate` function.
 */
import { type Context, Hono } from 'hono';
import { type IngestDeps, publish } from '../app/ingest.ts';
import { deepestQueues, queuesViewTimeLeft } from '../app/reconciler.ts';
import { pollStream, type StreamDeps } from '../app/streams.ts';
import { liftSwitch, type SwitchServiceDeps, setSwitch, switchRingsTimeLeft } from '../app/switches.ts';
import {
  createTenant,
  deleteTenant,
  getTenant,
  listTenants,
  rotateTenantKey,
  type TenantServiceDeps,
  updateTenant,
} from '../app/tenants.ts';
import type { WebhookService } from '../app/webhooks.ts';
import type { SluiceConfig } from '../core/config.ts';
import { ApiError, type ErrorCode, HTTP_STATUS } from '../core/errors.ts';
import { isId } from '../core/ids.ts';
import type { Principal } from '../core/model.ts';
import type { LoggerPort } from '../core/telemetry.ts';
import {
  MAX_BODY_BYTES,
  parseJsonObject,
  RESOURCE_PATTERN,
  validateNoFields,
  validatePublish,
  validateReplay,
  validateSwitch,
  validateTenantCreate,
  validateTenantUpdate,
  validateWebhookCreate,
  validateWebhookPatch,
} from '../core/validation.ts';
import { GATEWAY_MESSAGES } from '../definitions/gateway.ts';

export interface ApiServices {
  readonly config: SluiceConfig;
  readonly ingest: IngestDeps;
  readonly webhooks: WebhookService;
  readonly tenants: TenantServiceDeps;
  readonly switches: SwitchServiceDeps;
  readonly streams: StreamDeps;
  /** The alarm states, where they are evaluated in process (the sandbox); absent in AWS. */
  readonly alarms?: () => unknown[] | Promise<unknown[]>;
  /** For `GET /v1/admin/queues`. */
  readonly queues: Parameters<typeof deepestQueues>[0];
  /**
   * How long the invocation serving a request has left (Lambda's remaining time, in ms),
   * for the routes that stop on time (`GET /v1/admin/queues`, the switches' rings); absent in the sandbox,
   * where no invocation ends.
   */
  readonly invocationLeftMs?: (c: Context) => (() => number) | undefined;
  readonly logger: LoggerPort;
}

/** Resolves the caller; throws ApiError (e.g. rate_limited) to refuse with a reason. */
export type Authenticate = (c: Context) => Promise<Principal | undefined>;

type Env = { Variables: { principal: Principal } };

/**
 * The `{id}` of a webhook or switch route. Anything not shaped like one names
 * nothing: 404, however long it is (it never reaches a DynamoDB key).
 */
const PATH_NOUN = { wh: 'webhook', sw: 'switch', ten: 'tenant' } as const;

function pathId(c: Context, prefix: keyof typeof PATH_NOUN): string {
  const id = c.req.param('id') ?? '';
  if (!isId(prefix, id)) throw new ApiError('not_found', `No ${PATH_NOUN[prefix]} has this id.`);
  return id;
}

export function errorBody(code: ErrorCode, message: string) {
  return { error: { code, message } };
}

function respondError(c: Context, error: ApiError): Response {
  if (error.retryAfterSeconds !== undefined) c.header('Retry-After', String(error.retryAfterSeconds));
  return c.json(errorBody(error.code, error.message), HTTP_STATUS[error.code] as 400);
}

/** A query parameter given at most once: `?resource=a&resource=b` names no one resource. */
function queryParam(c: Context, name: string): string | undefined {
  const values = c.req.queries(name);
  if (values !== undefined && values.length > 1) throw new ApiError('invalid_request', `${name} must be given at most once.`);
  return values?.[0];
}

/**
 * Refuses a query parameter the route does not take, as a body's unknown field is
 * refused: ignored, a misspelt `limt=5` would be answered with a page of the default
 * size, and `after` on a route that does not page with the first page, as if asked for.
 * Every route but the health check says what it takes, none (`[]`) included: ignored
 * there, `GET /v1/admin/switches?tenant=ten_…` answered every tenant's switches as if
 * filtered, and `DELETE /v1/webhooks/{id}?dry_run=true` deleted the webhook.
 */
function onlyQuery(c: Context, names: readonly string[]): void {
  const unknown = Object.keys(c.req.queries()).filter((name) => !names.includes(name));
  if (unknown.length === 0) return;
  const what = unknown.length === 1 ? `${unknown[0]} is not a query parameter` : `${unknown.join(', ')} are not query parameters`;
  const takes = names.length === 0 ? 'none' : names.join(' and ');
  throw new ApiError('invalid_request', `${what} of this route (it takes ${takes}).`);
}

/** The query parameters of a route that takes none. Each route checks them after the key, which is judged first. */
const NO_QUERY: readonly string[] = [];

/** A whole-number query parameter within bounds, or the default when absent. */
function boundedInt(raw: string | undefined, fallback: number, min: number, max: number, name: string): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || value < min || value > max) {
    throw new ApiError('invalid_request', `${name} must be a whole number from ${min} to ${max}.`);
  }
  return value;
}

/** The answer to a route that does not exist. */
export function notFound(c: Context): Response {
  return respondError(c, new ApiError('not_found', `There is no route ${c.req.method} ${c.req.path}.`));
}

/**
 * Reads a JSON object body, refusing bodies over 1 MiB by their declared length, and
 * else as they are read: a body sent without a length (chunked) is counted chunk by
 * chunk and refused as soon as it passes the limit, never buffered whole (API Gateway
 * stops at 10 MB; the sandbox has no such gate in front of it). A body with its length
 * is read whole at once: no stream is made for it (the Node adapter reads the socket
 * straight into one buffer), which costs a small request a fraction of the CPU.
 */
async function readJsonBody(c: Context): Promise<Record<string, unknown>> {
  const tooLarge = () => new ApiError('payload_too_large', `The body must be at most ${MAX_BODY_BYTES} bytes.`);
  const length = c.req.header('content-length');
  if (Number(length ?? '0') > MAX_BODY_BYTES) throw tooLarge();
  const type = c.req.header('content-type') ?? '';
  // JSON itself, with parameters or none: not a type that only begins like it (application/json-patch+json).
  if (!/^application\/json\s*(?:;|$)/i.test(type)) {
    throw new ApiError('invalid_request', 'Send the body as JSON with content-type: application/json.');
  }
  let bytes: Uint8Array;
  try {
    bytes = length !== undefined ? new Uint8Array(await c.req.raw.arrayBuffer()) : await readCounted(c, tooLarge);
  } catch (error) {
    if (error instanceof ApiError) throw error;
    // The client stopped sending (its connection closed mid-body): its own trouble, no
    // server error (which would page as ingest-5xx). In AWS API Gateway has the whole body first.
    throw new ApiError('invalid_request', 'The request body ended before all of it came; send it again.');
  }
  // The declared length is the body's (Node's parser reads no further; hono's Lambda
  // adapter sets it from the body API Gateway passed): checked again all the same.
  if (bytes.byteLength > MAX_BODY_BYTES) throw tooLarge();
  let text: string;
  try {
    // Fatal: JSON must be UTF-8 (RFC 8259); decoded leniently, a body in another encoding
    // would be accepted with its bad bytes turned into U+FFFD, and delivered so.
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new ApiError('invalid_request', 'The body must be JSON encoded as UTF-8.');
  }
  return parseJsonObject(text);
}

/**
 * The body of a route that takes none: there may be none (no length, or 0), and one sent
 * is read as any body is and may hold no field, as no route takes a field it does not
 * know. Ignored, `{"key":"whsec_…"}` (the secret Svix's rotation sets) would rotate the
 * secret to one the caller never chose, and answer 200 as if it had been set, and
 * `{"dry_run":true}` on a DELETE deleted for good. A GET's body is refused whatever it
 * holds: a web Request (both the Node server's and the Lambda adapter's) carries none for
 * a GET, so it cannot be read, and `{"limit":5}` there is not the query's `limit`.
 */
async function readNoBody(c: Context): Promise<void> {
  const length = c.req.header('content-length');
  if (c.req.header('transfer-encoding') === undefined && (length === undefined || length === '0')) return;
  if (c.req.method === 'GET') {
    throw new ApiError('invalid_request', 'A GET takes no body: its parameters, if it has any, go in the query string.');
  }
  validateNoFields(await readJsonBody(c));
}

/** A body without a declared length, read chunk by chunk and refused once it passes the limit. */
async function readCounted(c: Context, tooLarge: () => ApiError): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = c.req.raw.body?.getReader();
  for (;;) {
    const read = await reader?.read();
    if (!read || read.done) break;
    size += read.value.byteLength;
    if (size > MAX_BODY_BYTES) {
      await reader?.cancel().catch(() => undefined);
      throw tooLarge();
    }
    chunks.push(read.value);
  }
  return Buffer.concat(chunks, size);
}

function tenantOf(c: Context<Env>): string {
  const principal = c.get('principal');
  if (principal.kind !== 'tenant') throw new ApiError('forbidden', 'This route needs a tenant key (sk_…).');
  return principal.tenantId;
}

function requireAdmin(c: Context<Env>): void {
  if (c.get('principal').kind !== 'admin') throw new ApiError('forbidden', 'This route needs the admin key (ak_…).');
}

export function createApi(services: ApiServices, authenticate: Authenticate): Hono<Env> {
  const app = new Hono<Env>();
  const webhookRules = { allowHttp: services.config.allowPrivateTargets, maxRatePerSecond: services.config.endpointRatePerSecond };

  app.onError((error, c) => {
    if (error instanceof ApiError) return respondError(c, error);
    // The caller, if the request got that far: on-call reads who is failing (ingest-5xx) from this line.
    const principal = c.get('principal') as Principal | undefined;
    const caller = principal?.kind === 'tenant' ? { tenant: principal.tenantId } : principal ? { principal: principal.kind } : {};
    services.logger.error('Unhandled error in API', { error, path: c.req.path, method: c.req.method, ...caller });
    return respondError(c, new ApiError('internal', 'Something went wrong on our side; try again.'));
  });
  app.notFound(notFound);

  app.get('/v1/health', (c) => c.json({ status: 'ok' }));

  app.use('/v1/*', async (c, next) => {
    // API Gateway's authorizer guards every method of the API but the health check's, so
    // a HEAD without a valid key is a 401 there before it is anything else.
    if (c.req.path === '/v1/health') return next();
    const principal = await authenticate(c);
    if (!principal) throw new ApiError('unauthorized', GATEWAY_MESSAGES.unauthorized);
    c.set('principal', principal);
    await next();
  });
  // Hono answers a HEAD by running the GET route, and a GET can change things (the first
  // poll of /v1/events starts a stream): so HEAD has no route but the health check's.
  app.use('*', async (c, next) => {
    if (c.req.method === 'HEAD' && c.req.path !== '/v1/health') return notFound(c);
    await next();
  });

  app.post('/v1/events', async (c) => {
    const tenantId = tenantOf(c);
    onlyQuery(c, NO_QUERY);
    const inputs = validatePublish(await readJsonBody(c));
    const outcome = await publish(services.ingest, tenantId, inputs);
    if (outcome.retryAfterSeconds !== undefined) c.header('Retry-After', String(outcome.retryAfterSeconds));
    return c.json({ events: outcome.results }, outcome.httpStatus);
  });

  app.get('/v1/events', async (c) => {
    const tenantId = tenantOf(c);
    onlyQuery(c, ['resource', 'sync']);
    await readNoBody(c);
    const resource = queryParam(c, 'resource');
    if (resource === undefined || !RESOURCE_PATTERN.test(resource)) {
      throw new ApiError('invalid_request', `resource must be given and match ${RESOURCE_PATTERN.source}.`);
    }
    const result = await pollStream(services.streams, tenantId, resource, queryParam(c, 'sync'));
    if (result.status === 412) return c.json({ sync: result.sync, ...errorBody('invalid_request', result.reason) }, 412);
    return c.json({ data: result.data, sync: result.sync, has_more: result.has_more });
  });

  app.post('/v1/webhooks', async (c) => {
    const tenantId = tenantOf(c);
    onlyQuery(c, NO_QUERY);
    const input = validateWebhookCreate(await readJsonBody(c), webhookRules);
    return c.json(await services.webhooks.create(tenantId, input), 201);
  });
  app.get('/v1/webhooks', async (c) => {
    const tenantId = tenantOf(c);
    onlyQuery(c, ['limit', 'after']);
    await readNoBody(c);
    const limit = boundedInt(queryParam(c, 'limit'), 100, 1, 500, 'limit');
    const after = queryParam(c, 'after');
    if (after !== undefined && !isId('wh', after)) throw new ApiError('invalid_request', 'after must be a webhook id (wh_…).');
    return c.json(await services.webhooks.list(tenantId, limit, after));
  });
  app.get('/v1/webhooks/:id', async (c) => {
    const tenantId = tenantOf(c);
    onlyQuery(c, NO_QUERY);
    await readNoBody(c);
    return c.json(await services.webhooks.get(tenantId, pathId(c, 'wh')));
  });
  app.patch('/v1/webhooks/:id', async (c) => {
    const tenantId = tenantOf(c);
    onlyQuery(c, NO_QUERY);
    const patch = validateWebhookPatch(await readJsonBody(c), webhookRules);
    return c.json(await services.webhooks.update(tenantId, pathId(c, 'wh'), patch));
  });
  app.post('/v1/webhooks/:id/rotate-secret', async (c) => {
    const tenantId = tenantOf(c);
    onlyQuery(c, NO_QUERY);
    await readNoBody(c);
    return c.json(await services.webhooks.rotateSecret(tenantId, pathId(c, 'wh')));
  });
  app.get('/v1/webhooks/:id/attempts', async (c) => {
    const tenantId = tenantOf(c);
    onlyQuery(c, ['limit']);
    await readNoBody(c);
    const limit = boundedInt(queryParam(c, 'limit'), 50, 1, 100, 'limit');
    return c.json({ data: await services.webhooks.attempts(tenantId, pathId(c, 'wh'), limit) });
  });
  app.post('/v1/webhooks/:id/replay', async (c) => {
    const tenantId = tenantOf(c);
    onlyQuery(c, NO_QUERY);
    const window = validateReplay(await readJsonBody(c));
    return c.json({ events: await services.webhooks.replay(tenantId, pathId(c, 'wh'), window) }, 202);
  });
  app.get('/v1/webhooks/:id/dead-letters', async (c) => {
    const tenantId = tenantOf(c);
    onlyQuery(c, ['limit', 'after']);
    await readNoBody(c);
    const limit = boundedInt(queryParam(c, 'limit'), 50, 1, 100, 'limit');
    return c.json(await services.webhooks.deadLetters(tenantId, pathId(c, 'wh'), limit, queryParam(c, 'after')));
  });
  app.post('/v1/webhooks/:id/dead-letters/replay', async (c) => {
    const tenantId = tenantOf(c);
    onlyQuery(c, NO_QUERY);
    await readNoBody(c);
    return c.json(await services.webhooks.replayDeadLetters(tenantId, pathId(c, 'wh')), 202);
  });
  app.delete('/v1/webhooks/:id', async (c) => {
    const tenantId = tenantOf(c);
    onlyQuery(c, NO_QUERY);
    await readNoBody(c);
    await services.webhooks.delete(tenantId, pathId(c, 'wh'));
    return c.body(null, 204);
  });

  app.post('/v1/admin/tenants', async (c) => {
    requireAdmin(c);
    onlyQuery(c, NO_QUERY);
    const defaults = {
      max_webhooks: services.config.maxWebhooksPerTenant,
      rate_per_second: services.config.tenantRatePerSecond,
      burst: services.config.tenantBurst,
    };
    const input = validateTenantCreate(await readJsonBody(c), defaults);
    return c.json(await createTenant(services.tenants, input), 201);
  });
  app.get('/v1/admin/tenants', async (c) => {
    requireAdmin(c);
    onlyQuery(c, ['limit', 'after']);
    await readNoBody(c);
    const limit = boundedInt(queryParam(c, 'limit'), 50, 1, 100, 'limit');
    const after = queryParam(c, 'after');
    if (after !== undefined && !isId('ten', after)) throw new ApiError('invalid_request', 'after must be a tenant id (ten_…).');
    return c.json(await listTenants(services.tenants, limit, after));
  });
  app.get('/v1/admin/tenants/:id', async (c) => {
    requireAdmin(c);
    onlyQuery(c, NO_QUERY);
    await readNoBody(c);
    return c.json(await getTenant(services.tenants, pathId(c, 'ten')));
  });
  app.patch('/v1/admin/tenants/:id', async (c) => {
    requireAdmin(c);
    onlyQuery(c, NO_QUERY);
    const tenantId = pathId(c, 'ten');
    return c.json(await updateTenant(services.tenants, tenantId, validateTenantUpdate(await readJsonBody(c))));
  });
  app.delete('/v1/admin/tenants/:id', async (c) => {
    requireAdmin(c);
    onlyQuery(c, NO_QUERY);
    await readNoBody(c);
    const tenantId = pathId(c, 'ten');
    const switches = {
      list: services.switches.switches.list.bind(services.switches.switches),
      lift: (id: string) => liftSwitch(services.switches, id, switchRingsTimeLeft(Date.now, services.invocationLeftMs?.(c))),
    };
    const done = await deleteTenant({ ...services.tenants, webhooks: services.webhooks, switches }, tenantId);
    return done === 'deleted' ? c.body(null, 204) : c.json({ id: tenantId, status: 'deleting' }, 202);
  });
  app.post('/v1/admin/tenants/:id/rotate-key', async (c) => {
    requireAdmin(c);
    onlyQuery(c, NO_QUERY);
    await readNoBody(c);
    return c.json(await rotateTenantKey(services.tenants, pathId(c, 'ten')));
  });

  app.put('/v1/admin/switches', async (c) => {
    requireAdmin(c);
    onlyQuery(c, NO_QUERY);
    const input = validateSwitch(await readJsonBody(c));
    // Real time, as Lambda's remaining time is: the budget is against API Gateway's 29 s.
    return c.json(await setSwitch(services.switches, input, switchRingsTimeLeft(Date.now, services.invocationLeftMs?.(c))));
  });
  app.get('/v1/admin/switches', async (c) => {
    requireAdmin(c);
    onlyQuery(c, NO_QUERY);
    await readNoBody(c);
    return c.json({ data: await services.switches.switches.list({ lifting: true }) });
  });
  app.delete('/v1/admin/switches/:id', async (c) => {
    requireAdmin(c);
    onlyQuery(c, NO_QUERY);
    await readNoBody(c);
    await liftSwitch(services.switches, pathId(c, 'sw'), switchRingsTimeLeft(Date.now, services.invocationLeftMs?.(c)));
    return c.body(null, 204);
  });
  app.get('/v1/admin/alarms', async (c) => {
    requireAdmin(c);
    onlyQuery(c, NO_QUERY);
    await readNoBody(c);
    if (!services.alarms) {
      throw new ApiError('not_found', 'Alarm states are in CloudWatch in a deployed stack; this route exists in the sandbox.');
    }
    return c.json({ data: await services.alarms() });
  });

  app.get('/v1/admin/queues', async (c) => {
    requireAdmin(c);
    onlyQuery(c, ['limit']);
    await readNoBody(c);
    const limit = boundedInt(queryParam(c, 'limit'), 20, 1, 100, 'limit');
    // Real time, as Lambda's remaining time is: the budget is against API Gateway's 29 s.
    return c.json(await deepestQueues(services.queues, limit, queuesViewTimeLeft(Date.now, services.invocationLeftMs?.(c))));
  });

  return app;
}
