/**
 * Per-tenant API throttles. In AWS each tenant gets an API Gateway API key (whose
 * value the authorizer reports as `usageIdentifierKey`) in a usage plan of its own
 * with the tenant's rate and burst. The sandbox keeps the same limits in memory and
 * applies them in its HTTP server, as API Gateway would.
 */
import {
  type APIGatewayClient,
  CreateApiKeyCommand,
  CreateUsagePlanCommand,
  CreateUsagePlanKeyCommand,
  DeleteApiKeyCommand,
  DeleteUsagePlanCommand,
  GetUsagePlansCommand,
  UpdateUsagePlanCommand,
} from '@aws-sdk/client-api-gateway';
import { ApiError } from '../core/errors.ts';
import type { Tenant } from '../core/model.ts';
import { type LoggerPort, NO_LOGS } from '../core/telemetry.ts';
import { type Bucket, type TakeResult, take } from '../core/token-bucket.ts';
import { sentAgain } from './aws.ts';

export interface UsagePlans {
  /** Creates the tenant's throttle; returns the ids needed to remove it. */
  provision(tenant: Tenant): Promise<Record<string, string>>;
  remove(provisioning: Record<string, string>): Promise<void>;
  /** Sets the tenant's throttle to its limits as they now are. */
  setThrottle(provisioning: Record<string, string>, tenant: Tenant): Promise<void>;
}

/**
 * API Gateway's own limits, as the admin should hear of them: its quota of usage
 * plans and API keys per region (300 and 10,000 by default) is a 422 to act on, and
 * its throttle on these calls a 429 to retry; anything else stays an error.
 */
function quotaError(error: unknown): unknown {
  const name = error instanceof Error ? error.name : '';
  if (name === 'LimitExceededException') {
    return new ApiError(
      'limit_exceeded',
      "API Gateway's quota of usage plans or API keys in this region is reached; raise it in Service Quotas, or delete tenants no longer used (DELETE /v1/admin/tenants/{id}).",
    );
  }
  if (name === 'TooManyRequestsException')
    return new ApiError('rate_limited', 'Tenants are being created faster than API Gateway allows; retry shortly.', 2);
  return error;
}

/** A removal that finds nothing to remove has nothing left to do (a removal sent again: a tenant's deletion, say). */
function goneAlready(error: unknown): void {
  if (!(error instanceof Error && error.name === 'NotFoundException')) throw error;
}

/**
 * The stage's removal from a plan refused because the plan has it no more (a deletion
 * sent again after one that removed it and then failed): API Gateway may answer a stage
 * it does not find with a BadRequest rather than a NotFound. Taken as done: should the
 * plan still have the stage, its deletion, next, is refused and says so.
 */
function stageGoneAlready(error: unknown): void {
  if (error instanceof Error && error.name === 'BadRequestException') return;
  goneAlready(error);
}

/** A creation refused as a duplicate on the SDK's second try or later: maybe of its own first try (see `sentAgain`). */
function conflictOnRetry(error: unknown): boolean {
  return error instanceof Error && error.name === 'ConflictException' && sentAgain(error);
}

/** Tries of a removal, and the first wait between them (doubling): API Gateway's throttle on these calls outlasts the SDK's own retries. */
const REMOVE_ATTEMPTS = 4;
const REMOVE_FIRST_WAIT_MS = 1_000;

export class ApiGatewayUsagePlans implements UsagePlans {
  readonly #client: APIGatewayClient;
  readonly #restApiId: string;
  readonly #stage: string;
  readonly #logger: LoggerPort;
  readonly #firstWaitMs: number;

  constructor(options: { client: APIGatewayClient; restApiId: string; stage: string; logger?: LoggerPort; removeFirstWaitMs?: number }) {
    this.#client = options.client;
    this.#restApiId = options.restApiId;
    this.#stage = options.stage;
    this.#logger = options.logger ?? NO_LOGS;
    this.#firstWaitMs = options.removeFirstWaitMs ?? REMOVE_FIRST_WAIT_MS;
  }

  async provision(tenant: Tenant): Promise<Record<string, string>> {
    const name = `sluice-${tenant.id}`;
    const key = await this.#client
      .send(new CreateApiKeyCommand({ name, value: tenant.usageKey, enabled: true }))
      .catch((error: unknown) => {
        // The key's value is new and random: refused as a duplicate, it is this very call's
        // first try, applied with its answer lost; nothing here can name it to remove it.
        if (conflictOnRetry(error)) {
          this.#logger.error('API key left behind after a lost answer; delete it', { apiKeyName: name, error });
        }
        throw quotaError(error);
      });
    const ids: Record<string, string> = { apiKeyId: key.id ?? '' };
    try {
      const plan = await this.#client.send(
        new CreateUsagePlanCommand({
          name,
          apiStages: [{ apiId: this.#restApiId, stage: this.#stage }],
          throttle: { rateLimit: tenant.limits.rate_per_second, burstLimit: tenant.limits.burst },
        }),
      );
      ids.usagePlanId = plan.id ?? '';
      // A try before this one may have made a plan whose answer was lost: one of the
      // region's few usage plans (300 by default), left with no key. It goes.
      if (sentAgain(plan)) await this.#removePlansNamed(name, ids.usagePlanId);
      await this.#client
        .send(new CreateUsagePlanKeyCommand({ usagePlanId: ids.usagePlanId, keyId: ids.apiKeyId, keyType: 'API_KEY' }))
        .catch((error: unknown) => {
          // Already in the plan: this call's first try applied, its answer lost.
          if (!conflictOnRetry(error)) throw error;
        });
      return ids;
    } catch (error) {
      await this.remove(ids).catch(() => undefined);
      // The plan's creation failed on a retry: its first try may have made one all the same.
      if (ids.usagePlanId === undefined && sentAgain(error)) await this.#removePlansNamed(name).catch(() => undefined);
      throw quotaError(error);
    }
  }

  /** Removes the usage plans named `name` but `keep` (a lost answer's plans: see provision). */
  async #removePlansNamed(name: string, keep?: string): Promise<void> {
    const found: string[] = [];
    let position: string | undefined;
    do {
      const page = await this.#client.send(new GetUsagePlansCommand({ limit: 500, ...(position && { position }) }));
      for (const plan of page.items ?? []) if (plan.name === name && plan.id && plan.id !== keep) found.push(plan.id);
      position = page.position;
    } while (position);
    for (const usagePlanId of found) await this.remove({ usagePlanId });
  }

  async setThrottle(provisioning: Record<string, string>, tenant: Tenant): Promise<void> {
    if (!provisioning.usagePlanId) throw new Error(`Tenant ${tenant.id} has no usage plan on record`);
    await this.#client.send(
      new UpdateUsagePlanCommand({
        usagePlanId: provisioning.usagePlanId,
        patchOperations: [
          { op: 'replace', path: '/throttle/rateLimit', value: String(tenant.limits.rate_per_second) },
          { op: 'replace', path: '/throttle/burstLimit', value: String(tenant.limits.burst) },
        ],
      }),
    );
  }

  /**
   * Removes a tenant's throttle. A removal usually follows a throttled creation, so it
   * is tried again while API Gateway throttles it, going on from the step it reached;
   * what is still left is named in an error log for an operator to delete (a plan or key
   * left behind counts against the region's quota, and nothing else records it).
   */
  async remove(provisioning: Record<string, string>): Promise<void> {
    const done = new Set<string>();
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#removeRest(provisioning, done);
        return;
      } catch (error) {
        const throttled = error instanceof Error && error.name === 'TooManyRequestsException';
        if (!throttled || attempt === REMOVE_ATTEMPTS) {
          const left = Object.fromEntries(Object.entries(provisioning).filter(([step]) => !done.has(step)));
          this.#logger.error('Usage plan or API key left behind after a failed tenant creation; delete it', { ...left, error });
          throw error;
        }
        await new Promise((resolve) => setTimeout(resolve, this.#firstWaitMs * 2 ** (attempt - 1)));
      }
    }
  }

  async #removeRest(provisioning: Record<string, string>, done: Set<string>): Promise<void> {
    try {
      if (provisioning.usagePlanId && !done.has('usagePlanId')) {
        if (!done.has('apiStage')) {
          // API Gateway refuses to delete a usage plan that still has an API stage.
          await this.#client
            .send(
              new UpdateUsagePlanCommand({
                usagePlanId: provisioning.usagePlanId,
                patchOperations: [{ op: 'remove', path: '/apiStages', value: `${this.#restApiId}:${this.#stage}` }],
              }),
            )
            .catch(stageGoneAlready);
          done.add('apiStage');
        }
        await this.#client.send(new DeleteUsagePlanCommand({ usagePlanId: provisioning.usagePlanId })).catch(goneAlready);
        done.add('usagePlanId');
      }
    } finally {
      // The key goes even when its plan would not: a key left behind counts against the quota too.
      if (provisioning.apiKeyId && !done.has('apiKeyId')) {
        await this.#client.send(new DeleteApiKeyCommand({ apiKey: provisioning.apiKeyId })).catch(goneAlready);
        done.add('apiKeyId');
      }
    }
  }
}

/** The sandbox's stand-in for API Gateway usage plans: a token bucket per usage key. */
export class LocalUsagePlans implements UsagePlans {
  readonly #limits = new Map<string, { rate: number; burst: number }>();
  readonly #buckets = new Map<string, Bucket>();

  async provision(tenant: Tenant): Promise<Record<string, string>> {
    this.#limits.set(tenant.usageKey, { rate: tenant.limits.rate_per_second, burst: tenant.limits.burst });
    return { usageKey: tenant.usageKey };
  }

  async remove(provisioning: Record<string, string>): Promise<void> {
    if (provisioning.usageKey) this.#limits.delete(provisioning.usageKey);
  }

  async setThrottle(_provisioning: Record<string, string>, tenant: Tenant): Promise<void> {
    this.#limits.set(tenant.usageKey, { rate: tenant.limits.rate_per_second, burst: tenant.limits.burst });
  }

  knows(usageKey: string): boolean {
    return this.#limits.has(usageKey);
  }

  /** Takes one request's token; returns the seconds to wait when there is none. */
  admit(usageKey: string, now: number, fallback: { rate: number; burst: number }): number | undefined {
    const result = this.#take(usageKey, now, fallback);
    this.#buckets.set(usageKey, result.bucket);
    return waitSeconds(result);
  }

  /** The seconds a request would be told to wait now, or undefined when a token is there; takes nothing. */
  refusal(usageKey: string, now: number, fallback: { rate: number; burst: number }): number | undefined {
    return waitSeconds(this.#take(usageKey, now, fallback));
  }

  /** One request's token from the key's bucket as it would be now; the bucket is not changed. */
  #take(usageKey: string, now: number, fallback: { rate: number; burst: number }): TakeResult {
    const limits = this.#limits.get(usageKey) ?? fallback;
    return take(this.#buckets.get(usageKey), 1, limits.rate, limits.burst, now);
  }
}

/** What a usage plan's 429 says to wait, in whole seconds (at least 1), or undefined when the request may go. */
function waitSeconds(result: TakeResult): number | undefined {
  return result.ok ? undefined : Math.max(1, Math.ceil(result.retryAfterMs / 1000));
}
