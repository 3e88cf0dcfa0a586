/**
 * The sandbox's API: API Gateway's part (the TOKEN authorizer with its cache, then
 * the usage plan's throttle) in front of the same Hono app the Lambda serves, plus
 * the sandbox's own routes (canary receiver, inbox, notifications). It runs on a
 * thread of its own (api-thread.ts); what it reports goes through the ports given.
 */
import { createServer, type RequestListener, type Server, type ServerOptions } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { type Context, Hono } from 'hono';
import { type ClientOptions, documentClient, sqsClient } from '../functions/adapters/aws.ts';
import { CanaryStore } from '../functions/adapters/canary-store.ts';
import { Logger, loggerPort } from '../functions/adapters/powertools.ts';
import { TenantStore } from '../functions/adapters/tenant-store.ts';
import { LocalUsagePlans } from '../functions/adapters/usage-plans.ts';
import { createApi, notFound } from '../functions/api/app.ts';
import { receiveCanary } from '../functions/app/canary.ts';
import type { Notifier } from '../functions/app/delivery/deps.ts';
import { apiServices, type Wiring } from '../functions/app/runtime.ts';
import { AUTH_CONTEXT, makeAuthorizerHandler } from '../functions/authorizer/process.ts';
import type { SluiceConfig } from '../functions/core/config.ts';
import { ApiError } from '../functions/core/errors.ts';
import { hashKey } from '../functions/core/keys.ts';
import type { Principal } from '../functions/core/model.ts';
import type { MetricsPort } from '../functions/core/telemetry.ts';
import { API_SERVER_ERRORS_METRIC, THROTTLED_REQUESTS_METRIC } from '../functions/definitions/alarms.ts';
import { AUTHORIZER_CACHE_SECONDS } from '../functions/definitions/environment.ts';
import { GATEWAY_MESSAGES } from '../functions/definitions/gateway.ts';
import { answerThrottled, denies, gatewayRefusal } from './gateway.ts';
import { addressedHere, answerMisaddressed, sentFromHere } from './hosts.ts';
import { inboxRoutes } from './inbox.ts';
import { type CallObserver, observeCalls } from './observe.ts';
import { currentFunction, enforceTableAccess, runningAs } from './table-access.ts';
import { InFlight, settled } from './threads.ts';

/** Everything the API needs that is plain data: what a thread can be started with. */
export interface ApiSettings {
  readonly config: SluiceConfig;
  readonly adminKey: string;
  readonly port: number;
  readonly host: string;
  readonly dynamo: ClientOptions;
  readonly sqs: ClientOptions;
  readonly eventsTable: string;
  readonly controlTable: string;
  readonly distributeQueueUrl: string;
  readonly distributeBulkQueueUrl: string;
  readonly deliverQueueUrl: string;
  readonly logLevel: 'DEBUG' | 'INFO' | 'WARN' | 'ERROR' | 'SILENT';
  /** @default AUTHORIZER_CACHE_SECONDS, as the stack sets API Gateway's cache */
  readonly authorizerCacheMs?: number;
}

/** Where the API reports to, and what it asks the rest of the sandbox. */
export interface ApiPorts {
  readonly metrics: MetricsPort;
  /** A data point of a source the sandbox adds for what AWS would measure (API 5xx). */
  readonly record: (key: string, value: number) => void;
  /** Sends what was reported so far; called as each request ends, before its answer goes out. */
  readonly flush?: () => void;
  readonly notifier: Notifier;
  readonly alarms: () => Promise<unknown[]>;
  readonly notices: () => Promise<unknown[]>;
  readonly onInvocation?: (fn: string, durationMs: number) => void;
  readonly onCall?: CallObserver;
}

export interface ApiServer {
  readonly port: number;
  stop(): Promise<void>;
}

const ADMIN_USAGE_KEY = 'sandbox-admin';
/** How long the usage plan's refusals are summed before they are reported (CloudWatch's periods are minutes). */
export const THROTTLED_REPORT_MS = 250;
/** How long stopping waits for the requests being handled. */
const STOP_WAIT_MS = 5_000;
/** And then for their answers to go out. */
const ANSWER_WAIT_MS = 1_000;
const TOKEN_AUTHORIZER_ARN = 'arn:aws:execute-api:us-east-1:000000000000:sandbox/v1/ANY/';

export async function startApiServer(settings: ApiSettings, ports: ApiPorts): Promise<ApiServer> {
  const { config, adminKey, metrics } = { ...settings, ...ports };
  const authorizerCacheMs = settings.authorizerCacheMs ?? AUTHORIZER_CACHE_SECONDS * 1000;
  const log = loggerPort(new Logger({ serviceName: 'sluice-sandbox-api', logLevel: settings.logLevel }));
  const observe = <C extends { middlewareStack: unknown }>(client: C, service: 'dynamodb' | 'sqs'): C => {
    if (ports.onCall) observeCalls(client, service, ports.onCall);
    return client;
  };
  const dynamo = observe(documentClient({ ...settings.dynamo, maxSockets: 256 }), 'dynamodb');
  // This thread runs the API function, and the authorizer and the canary's receiver,
  // functions of their own with narrower roles (see runningAs below): each call is
  // refused where its function's role would refuse it.
  enforceTableAccess(dynamo, { events: settings.eventsTable, control: settings.controlTable }, () => currentFunction() ?? 'api');
  const sqs = observe(sqsClient({ ...settings.sqs, maxSockets: 64 }), 'sqs');
  const wiring: Wiring = {
    config,
    dynamo,
    sqs,
    eventsTable: settings.eventsTable,
    controlTable: settings.controlTable,
    distributeQueueUrl: settings.distributeQueueUrl,
    distributeBulkQueueUrl: settings.distributeBulkQueueUrl,
    deliverQueueUrl: settings.deliverQueueUrl,
    metrics,
    logger: log,
  };

  // API Gateway's part: the TOKEN authorizer, then the usage plan's throttle.
  const usagePlans = new LocalUsagePlans();
  const tenants = new TenantStore({ client: dynamo, tableName: settings.controlTable });
  const authorizer = makeAuthorizerHandler({
    adminKeyHash: async () => hashKey(adminKey),
    tenants,
    adminUsageKey: ADMIN_USAGE_KEY,
    metrics,
    logger: log,
  });
  type Answer = Awaited<ReturnType<typeof authorizer>>;
  const authorizerCache = new Map<string, Answer & { until: number }>();
  // API Gateway caches a TOKEN authorizer's answer per token (AUTHORIZER_CACHE_SECONDS in the stack).
  const cachedAnswer = (header: string, now: number) => {
    const result = authorizerCache.get(header);
    return result && result.until >= now ? result : undefined;
  };
  const tenantLimits = { rate: config.tenantRatePerSecond, burst: config.tenantBurst };
  // The usage plan's refusals, which the access log's metric filter counts in AWS. A
  // flood makes thousands a second: they are summed over THROTTLED_REPORT_MS and
  // reported as one data point, not one report each to the metrics' thread.
  let throttled = 0;
  let throttledTimer: ReturnType<typeof setTimeout> | undefined;
  const reportThrottled = () => {
    clearTimeout(throttledTimer);
    throttledTimer = undefined;
    if (throttled > 0) metrics.count(THROTTLED_REQUESTS_METRIC, throttled);
    throttled = 0;
  };
  const countThrottled = () => {
    throttled++;
    throttledTimer ??= setTimeout(reportThrottled, THROTTLED_REPORT_MS);
  };
  const authenticate = async (c: Context): Promise<Principal | undefined> => {
    const header = c.req.header('authorization');
    if (header === undefined) return undefined;
    let result = cachedAnswer(header, Date.now());
    if (!result) {
      try {
        const answer = await runningAs('authorizer', () =>
          authorizer({ type: 'TOKEN', authorizationToken: header, methodArn: TOKEN_AUTHORIZER_ARN }),
        );
        result = { ...answer, until: Date.now() + authorizerCacheMs };
        if (authorizerCache.size > 10_000) authorizerCache.clear();
        authorizerCache.set(header, result);
      } catch (error) {
        // The authorizer refuses a key with a Deny policy (below), so a throw is the
        // authorizer failing (its key lookup, say), which API Gateway answers 500
        // (AUTHORIZER_FAILURE) and counts in 5XXError: a valid key is not told it is wrong.
        // Lambda counts the throw in the authorizer's Errors (authorizer-errors).
        ports.record('function:authorizer:Errors', 1);
        log.error('Authorizer failed', { error });
        throw new ApiError('internal', 'Something went wrong on our side; try again.');
      }
    }
    if (denies(result)) return undefined;
    const context = result.context ?? {};
    const usageKey = result.usageIdentifierKey as string;
    if (context[AUTH_CONTEXT.principal] === 'tenant' && !usagePlans.knows(usageKey)) {
      // A tenant from a persisted sandbox (SLUICE_DATA_DIR): its throttle lived in memory.
      const tenant = await tenants.get(String(context[AUTH_CONTEXT.tenantId]));
      // None, or being deleted: its usage plan is gone, and API Gateway refuses the key
      // (INVALID_API_KEY) even on an authorizer's answer it still keeps.
      if (!tenant) throw new ApiError('forbidden', GATEWAY_MESSAGES.noUsagePlan);
      await usagePlans.provision(tenant);
    }
    const wait = usagePlans.admit(usageKey, Date.now(), tenantLimits);
    if (wait !== undefined) {
      countThrottled();
      throw new ApiError('rate_limited', GATEWAY_MESSAGES.throttled, wait);
    }
    if (context[AUTH_CONTEXT.principal] === 'admin') return { kind: 'admin' };
    return { kind: 'tenant', tenantId: String(context[AUTH_CONTEXT.tenantId]) };
  };

  // API Gateway refuses a throttled key before anything of the API runs: so does the sandbox (gateway.ts).
  // Set by stop: a request that comes after it, on a connection kept alive, is not
  // started (its connection is closed, as one that came a moment later would be refused).
  let stopping = false;
  const withGateway = (options: ServerOptions, listener: RequestListener) =>
    createServer(options, (req, res) => {
      if (stopping) return void req.socket.destroy();
      // Before anything is read or counted: a rebound name, or another site's page, gets nothing (hosts.ts).
      if (!addressedHere(req.headers.host, settings.host) || !sentFromHere(req.headers.origin, settings.host)) {
        return answerMisaddressed(res);
      }
      const wait = gatewayRefusal(req, Date.now(), { cachedAnswer, usagePlans, tenantLimits });
      if (wait === undefined) return listener(req, res);
      countThrottled();
      answerThrottled(res, wait);
    });

  const canaryReceiver = {
    store: new CanaryStore({ client: dynamo, tableName: settings.controlTable }),
    metrics,
    logger: log,
    now: Date.now,
  };
  const outer = new Hono();
  outer.notFound(notFound);
  // Requests still being handled: stopping waits for them before it closes their AWS
  // clients, so no write is cut off halfway (dynalite can then wait on it for good).
  const handling = new InFlight();
  // What API Gateway's 5XXError metric would count (ApiServerErrors: no body here is too
  // large for a Lambda invoke, since the sandbox refuses past 1 MiB as it reads).
  outer.use('*', async (c, next) => {
    const started = performance.now();
    await handling.track(next());
    // Not the sandbox's own routes: in AWS the canary receiver is a function URL of its
    // own (its failures are that function's Errors) and the inbox does not exist.
    if (c.res.status >= 500 && !c.req.path.startsWith('/sandbox/')) metrics.count(API_SERVER_ERRORS_METRIC);
    // API Gateway answers what its authorizer or usage plan refuses itself: only the
    // rest invoke the API's Lambda (the authorizer's answers are cached, see above).
    const reachedLambda =
      c.req.path === '/v1/health' || (c as unknown as Context<{ Variables: { principal?: Principal } }>).get('principal') !== undefined;
    if (c.req.path.startsWith('/v1/') && reachedLambda) ports.onInvocation?.('api', performance.now() - started);
    ports.flush?.();
  });
  outer.post('/sandbox/canary', async (c) => {
    const body = await c.req.text();
    try {
      const status = await runningAs('canaryReceiver', () =>
        receiveCanary(
          canaryReceiver,
          { id: c.req.header('webhook-id'), timestamp: c.req.header('webhook-timestamp'), signature: c.req.header('webhook-signature') },
          body,
        ),
      );
      return c.body(null, status as 204);
    } catch (error) {
      // A failed invocation of the receiver, which pages canaryReceiver-errors in AWS
      // (its function URL answers 502), not ingest-5xx.
      ports.record('function:canaryReceiver:Errors', 1);
      log.error('Canary receiver failed', { error });
      return c.body(null, 502);
    }
  });
  outer.route('/', inboxRoutes());
  outer.get('/sandbox/notifications', async (c) => c.json({ data: await ports.notices() }));
  outer.route('/', createApi({ ...apiServices(wiring, usagePlans, ports.notifier), alarms: ports.alarms }, authenticate));

  const server = await new Promise<Server>((resolve) => {
    const s = serve(
      { fetch: outer.fetch, port: settings.port, hostname: settings.host, createServer: withGateway as typeof createServer },
      () => resolve(s as Server),
    );
  });
  return {
    port: (server.address() as AddressInfo).port,
    async stop() {
      // No new connections; those between requests close now, the others once their
      // request is answered. Not all at once: a request under way still did its work (a
      // tenant made, events accepted) but its caller, its connection closed under it,
      // took it for failed and asked again (the canary made another tenant at each stop
      // during its first run, and a producer without idempotency keys sent its events twice).
      stopping = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      await handling.settled(STOP_WAIT_MS);
      // Each answer is written just after its request is handled: its connection is
      // then idle, and closed; one that is not by ANSWER_WAIT_MS is closed anyway.
      const idle = setInterval(() => server.closeIdleConnections(), 10);
      await settled([closed], ANSWER_WAIT_MS);
      clearInterval(idle);
      server.closeAllConnections();
      await closed;
      reportThrottled();
      ports.flush?.();
      dynamo.destroy();
      sqs.destroy();
    },
  };
}
