/**
 * The real API Gateway client against a local HTTP server that answers as API
 * Gateway does when its regional quota of usage plans is reached (there is no
 * API Gateway emulator to run).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { APIGatewayClient } from '@aws-sdk/client-api-gateway';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ApiGatewayUsagePlans } from '../../functions/adapters/usage-plans.ts';
import { buildConfig } from '../../functions/core/config.ts';
import { ApiError } from '../../functions/core/errors.ts';
import { type LoggerPort, NO_LOGS } from '../../functions/core/telemetry.ts';

let server: http.Server;
let endpoint: string;
const calls: string[] = [];
let usagePlanAnswer: { status: number; type?: string } = { status: 201 };
let stageAttached = true;
let patches: unknown[] = [];
/** How many of the next requests of a kind ('PATCH', 'DELETE') API Gateway throttles. */
const throttleNext: Record<string, number> = {};
/** Requests (`METHOD /path`) API Gateway carries out, whose answers are then lost on the way back. */
const loseAnswer: Record<string, number> = {};
/** What those requests made: a plan (listed by GET /usageplans), or a key or plan key that a second try finds taken. */
let lost: { plans: Array<{ id: string; name: string }>; key: boolean; planKey: boolean } = { plans: [], key: false, planKey: false };

beforeAll(async () => {
  server = http.createServer((req, res) => {
    calls.push(`${req.method} ${req.url}`);
    let body = '';
    req.on('data', (chunk) => {
      body += chunk;
    });
    req.on('end', () => {
      if (req.method === 'PATCH') patches.push(...(JSON.parse(body) as { patchOperations: unknown[] }).patchOperations);
      const json = (status: number, body: unknown, type?: string) =>
        res.writeHead(status, { 'content-type': 'application/json', ...(type && { 'x-amzn-errortype': type }) }).end(JSON.stringify(body));
      const route = `${req.method} ${req.url?.split('?')[0]}`;
      if ((loseAnswer[route] ?? 0) > 0) {
        loseAnswer[route] = (loseAnswer[route] ?? 0) - 1;
        if (route === 'POST /usageplans') lost.plans.push({ id: `planLost${lost.plans.length}`, name: JSON.parse(body).name });
        if (route === 'POST /apikeys') lost.key = true;
        if (route.endsWith('/keys') && route !== 'POST /apikeys') lost.planKey = true;
        req.socket.destroy();
        return;
      }
      if (route === 'POST /apikeys' && lost.key) return json(409, { message: 'API Key already exists' }, 'ConflictException');
      if (route === 'POST /usageplans/plan123/keys' && lost.planKey) {
        return json(
          409,
          { message: 'Usage Plan plan123 cannot be added because API Key key123 is already associated' },
          'ConflictException',
        );
      }
      if (route === 'GET /usageplans') {
        // plan123 exists once a POST /usageplans was answered with it.
        const made = !usagePlanAnswer.type && calls.filter((c) => c === 'POST /usageplans').length > lost.plans.length;
        const mine = made ? [{ id: 'plan123', name: `sluice-${tenant.id}` }] : [];
        return json(200, { item: [...lost.plans, ...mine, { id: 'planOther', name: 'sluice-ten_other' }] });
      }
      if (req.method === 'PATCH' && req.url?.startsWith('/usageplans/planLost')) return json(200, { apiStages: [] });
      // A plan whose stage an earlier removal took off: removing it again is a bad request.
      if (req.method === 'PATCH' && req.url === '/usageplans/unstaged') {
        return json(400, { message: 'Invalid API Stage specified' }, 'BadRequestException');
      }
      if ((throttleNext[req.method ?? ''] ?? 0) > 0) {
        throttleNext[req.method ?? ''] = (throttleNext[req.method ?? ''] ?? 0) - 1;
        return json(429, { message: 'Too Many Requests' }, 'TooManyRequestsException');
      }
      if (req.method === 'POST' && req.url === '/apikeys') return json(201, { id: 'key123' });
      if (req.method === 'POST' && req.url === '/usageplans') {
        return usagePlanAnswer.type
          ? json(usagePlanAnswer.status, { message: 'Cannot exceed the limit' }, usagePlanAnswer.type)
          : json(201, { id: 'plan123' });
      }
      if (req.method === 'POST' && req.url?.endsWith('/keys')) return json(201, { id: 'key123', type: 'API_KEY' });
      if (req.method === 'PATCH' && req.url === '/usageplans/plan123') {
        stageAttached = false;
        return json(200, { id: 'plan123', apiStages: [] });
      }
      // As API Gateway: a usage plan with an API stage cannot be deleted.
      if (req.method === 'DELETE' && req.url === '/usageplans/plan123' && stageAttached) {
        return json(
          400,
          { message: 'Cannot delete Usage Plan plan123 because there are API Stages associated with it' },
          'BadRequestException',
        );
      }
      if (req.url?.endsWith('/gone'))
        return json(404, { message: 'Invalid Usage Plan or API Key identifier specified' }, 'NotFoundException');
      if (req.method === 'DELETE') return res.writeHead(202).end();
      json(404, { message: 'no such route' }, 'NotFoundException');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

function plans(logger?: LoggerPort, maxAttempts = 1) {
  const client = new APIGatewayClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    maxAttempts,
  });
  return new ApiGatewayUsagePlans({ client, restApiId: 'api123', stage: 'live', logger, removeFirstWaitMs: 5 });
}

const tenant = {
  id: 'ten_0000000000000000000',
  name: 'acme',
  limits: { max_webhooks: 100, rate_per_second: buildConfig({}).tenantRatePerSecond, burst: buildConfig({}).tenantBurst },
  usageKey: 'u'.repeat(30),
  createdAt: '',
};

describe('API Gateway usage plans', () => {
  it('creates the key, the plan and the link between them', async () => {
    usagePlanAnswer = { status: 201 };
    calls.length = 0;
    expect(await plans().provision(tenant)).toEqual({ apiKeyId: 'key123', usagePlanId: 'plan123' });
    expect(calls).toEqual(['POST /apikeys', 'POST /usageplans', 'POST /usageplans/plan123/keys']);
  });

  it("answers API Gateway's regional quota as limit_exceeded (422), and deletes the key it made", async () => {
    usagePlanAnswer = { status: 429, type: 'LimitExceededException' };
    calls.length = 0;
    const failed = await plans()
      .provision(tenant)
      .catch((error: unknown) => error);
    expect(failed).toBeInstanceOf(ApiError);
    expect(failed).toMatchObject({ code: 'limit_exceeded', status: 422 });
    expect(calls).toEqual(['POST /apikeys', 'POST /usageplans', 'DELETE /apikeys/key123']);
  });

  it('removes a plan as API Gateway allows it: its API stage first, then the plan, and the key in any case', async () => {
    stageAttached = true;
    patches = [];
    calls.length = 0;

    await plans().remove({ apiKeyId: 'key123', usagePlanId: 'plan123' });

    expect(calls).toEqual(['PATCH /usageplans/plan123', 'DELETE /usageplans/plan123', 'DELETE /apikeys/key123']);
    expect(patches).toEqual([{ op: 'remove', path: '/apiStages', value: 'api123:live' }]);
  });

  it('goes on removing while API Gateway throttles it, from the step it reached, and names what it could not remove', async () => {
    stageAttached = true;
    calls.length = 0;
    // The stage comes off; deleting the plan is throttled twice, then goes through.
    throttleNext.DELETE = 2;
    await plans().remove({ apiKeyId: 'key123', usagePlanId: 'plan123' });
    expect(calls.filter((c) => c === 'PATCH /usageplans/plan123')).toHaveLength(1);
    expect(calls.at(-2)).toBe('DELETE /usageplans/plan123');
    expect(calls.at(-1)).toBe('DELETE /apikeys/key123');

    // Throttled every time: the plan is left, and the log says which, for an operator to delete.
    stageAttached = true;
    throttleNext.PATCH = 99;
    const logged: Array<Record<string, unknown> | undefined> = [];
    const logger = { ...NO_LOGS, error: (_: string, fields?: Record<string, unknown>) => void logged.push(fields) };
    await expect(plans(logger).remove({ apiKeyId: 'key123', usagePlanId: 'plan123' })).rejects.toMatchObject({
      name: 'TooManyRequestsException',
    });
    throttleNext.PATCH = 0;
    expect(logged).toEqual([expect.objectContaining({ usagePlanId: 'plan123' })]);
    expect(logged[0]).not.toHaveProperty('apiKeyId');
  });

  it('takes a plan or key that is gone already for removed (a removal sent again: a deletion that goes on)', async () => {
    calls.length = 0;
    await plans().remove({ apiKeyId: 'gone', usagePlanId: 'gone' });
    expect(calls).toEqual(['PATCH /usageplans/gone', 'DELETE /usageplans/gone', 'DELETE /apikeys/gone']);
  });

  it('goes on to delete a plan whose stage an earlier removal took off (API Gateway refuses removing it again as a bad request)', async () => {
    calls.length = 0;
    await plans().remove({ apiKeyId: 'gone', usagePlanId: 'unstaged' });
    expect(calls).toEqual(['PATCH /usageplans/unstaged', 'DELETE /usageplans/unstaged', 'DELETE /apikeys/gone']);
  });

  it("sets a tenant's throttle on its own usage plan, to the limits it now has", async () => {
    patches = [];
    calls.length = 0;
    const raised = { ...tenant, limits: { ...tenant.limits, rate_per_second: 2_000, burst: 3_000 } };
    await plans().setThrottle({ apiKeyId: 'key123', usagePlanId: 'plan123' }, raised);
    expect(calls).toEqual(['PATCH /usageplans/plan123']);
    expect(patches).toEqual([
      { op: 'replace', path: '/throttle/rateLimit', value: '2000' },
      { op: 'replace', path: '/throttle/burstLimit', value: '3000' },
    ]);
    await expect(plans().setThrottle({}, raised)).rejects.toThrow('has no usage plan on record');
  });

  describe('when an answer is lost and the SDK sends the call again', () => {
    const reset = () => {
      usagePlanAnswer = { status: 201 };
      stageAttached = true;
      lost = { plans: [], key: false, planKey: false };
      calls.length = 0;
    };
    afterEach(reset);

    it('removes the usage plan the first try made, and keeps the one it answered', async () => {
      reset();
      loseAnswer['POST /usageplans'] = 1;
      expect(await plans(undefined, 2).provision(tenant)).toEqual({ apiKeyId: 'key123', usagePlanId: 'plan123' });
      expect(calls.map((c) => c.split('?')[0])).toEqual([
        'POST /apikeys',
        'POST /usageplans',
        'POST /usageplans',
        'GET /usageplans',
        'PATCH /usageplans/planLost0',
        'DELETE /usageplans/planLost0',
        'POST /usageplans/plan123/keys',
      ]);
    });

    it('removes the plan a first try made when the try sent again fails, and the key', async () => {
      reset();
      loseAnswer['POST /usageplans'] = 1;
      usagePlanAnswer = { status: 429, type: 'LimitExceededException' };
      await expect(plans(undefined, 2).provision(tenant)).rejects.toMatchObject({ code: 'limit_exceeded' });
      expect(calls.map((c) => c.split('?')[0])).toEqual([
        'POST /apikeys',
        'POST /usageplans',
        'POST /usageplans',
        'DELETE /apikeys/key123',
        'GET /usageplans',
        'PATCH /usageplans/planLost0',
        'DELETE /usageplans/planLost0',
      ]);
    });

    it('takes the key already in the plan for done, and lists nothing when no try was sent again', async () => {
      reset();
      loseAnswer['POST /usageplans/plan123/keys'] = 1;
      expect(await plans(undefined, 2).provision(tenant)).toEqual({ apiKeyId: 'key123', usagePlanId: 'plan123' });
      expect(calls).toEqual(['POST /apikeys', 'POST /usageplans', 'POST /usageplans/plan123/keys', 'POST /usageplans/plan123/keys']);
    });

    it('names the API key a lost answer left, which nothing can look up to remove', async () => {
      reset();
      loseAnswer['POST /apikeys'] = 1;
      const logged: Array<Record<string, unknown> | undefined> = [];
      const logger = { ...NO_LOGS, error: (_: string, fields?: Record<string, unknown>) => void logged.push(fields) };
      await expect(plans(logger, 2).provision(tenant)).rejects.toMatchObject({ name: 'ConflictException' });
      expect(logged).toEqual([expect.objectContaining({ apiKeyName: `sluice-${tenant.id}` })]);
      expect(calls).toEqual(['POST /apikeys', 'POST /apikeys']);
    });
  });

  it("answers API Gateway's throttle on these calls as rate_limited (429) with a Retry-After", async () => {
    usagePlanAnswer = { status: 429, type: 'TooManyRequestsException' };
    const failed = await plans()
      .provision(tenant)
      .catch((error: unknown) => error);
    expect(failed).toMatchObject({ code: 'rate_limited', status: 429, retryAfterSeconds: 2 });
  });
});
