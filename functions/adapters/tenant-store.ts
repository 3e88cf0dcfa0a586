/** Tenants and their API keys (stored as SHA-256 hashes only). */
import { DeleteCommand, type DynamoDBDocumentClient, GetCommand, PutCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { Tenant, TenantLimits } from '../core/model.ts';
import { CONTROL_PK, SUBSCRIPTIONS_SK, TENANT_SK, tenantPk } from '../definitions/tables.ts';
import { applied, isConditionFailure, markOnce, names, queryPages } from './dynamo.ts';

const keyPk = (hash: string) => `${CONTROL_PK.apiKey}${hash}`;
const KEY_SK = 'apikey';

function toTenant(item: Record<string, unknown>): Tenant {
  return {
    id: String(item.id),
    name: String(item.name),
    limits: item.limits as TenantLimits,
    usageKey: String(item.usage_key),
    createdAt: String(item.created_at),
  };
}

export class TenantStore {
  readonly #client: DynamoDBDocumentClient;
  readonly #table: string;

  constructor(options: { client: DynamoDBDocumentClient; tableName: string }) {
    this.#client = options.client;
    this.#table = options.tableName;
  }

  /**
   * Stores a tenant, then its key. The key item is written last: until it exists no
   * request can authenticate as the tenant, so a failure between the two writes
   * leaves no usable half-tenant (the caller deletes the tenant item). The tenant item
   * names its key's hash (`key_hash`): the one key that works for it (see switchKey).
   */
  async create(tenant: Tenant, keyHash: string, provisioning: Record<string, string>): Promise<void> {
    try {
      await this.#client.send(
        new PutCommand({
          TableName: this.#table,
          Item: {
            pk: tenantPk(tenant.id),
            sk: TENANT_SK,
            id: tenant.id,
            name: tenant.name,
            limits: tenant.limits,
            usage_key: tenant.usageKey,
            key_hash: keyHash,
            provisioning,
            webhook_count: 0,
            created_at: tenant.createdAt,
          },
          ConditionExpression: 'attribute_not_exists(#pk)',
          ExpressionAttributeNames: names('pk'),
        }),
      );
    } catch (error) {
      // The id is new and random: a refusal is this very write, sent again by the SDK
      // after its first try applied and its answer was lost. Anything else is thrown.
      if (!isConditionFailure(error) || (await this.keyHashOf(tenant.id)) !== keyHash) throw error;
    }
    await this.#putEntry(tenant);
    await this.putKey(keyHash, tenant.id);
  }

  /** The tenant's entry in the admin's list (written again as it is: a put sent twice is one). */
  async #putEntry(tenant: Pick<Tenant, 'id' | 'name' | 'createdAt'>): Promise<void> {
    await this.#client.send(
      new PutCommand({
        TableName: this.#table,
        Item: { pk: CONTROL_PK.tenants, sk: tenant.id, id: tenant.id, name: tenant.name, created_at: tenant.createdAt },
      }),
    );
  }

  /** The new name on the tenant's entry, only while it has one: a deletion that removed it meanwhile is not undone. */
  async #renameEntry(tenant: Pick<Tenant, 'id' | 'name'>): Promise<void> {
    await applied(
      this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: CONTROL_PK.tenants, sk: tenant.id },
          UpdateExpression: 'SET #name = :name',
          ConditionExpression: 'attribute_exists(#pk)',
          ExpressionAttributeNames: names('name', 'pk'),
          ExpressionAttributeValues: { ':name': tenant.name },
        }),
      ),
    );
  }

  async #deleteEntry(tenantId: string): Promise<void> {
    await this.#client.send(new DeleteCommand({ TableName: this.#table, Key: { pk: CONTROL_PK.tenants, sk: tenantId } }));
  }

  /** One page of the admin's list of tenants, oldest first, after the tenant `after` (which need not exist any more). */
  async list(limit: number, after?: string): Promise<{ tenants: Array<Pick<Tenant, 'id' | 'name' | 'createdAt'>>; hasMore: boolean }> {
    const items: Record<string, unknown>[] = [];
    const pages = queryPages(
      this.#client,
      {
        TableName: this.#table,
        KeyConditionExpression: '#pk = :pk',
        ExpressionAttributeNames: names('pk'),
        ExpressionAttributeValues: { ':pk': CONTROL_PK.tenants },
        Limit: limit + 1,
      },
      { ...(after !== undefined && { startKey: { pk: CONTROL_PK.tenants, sk: after } }), more: () => items.length <= limit },
    );
    for await (const result of pages) items.push(...(result.Items ?? []));
    return {
      tenants: items.slice(0, limit).map((item) => ({ id: String(item.id), name: String(item.name), createdAt: String(item.created_at) })),
      hasMore: items.length > limit,
    };
  }

  /**
   * Stores a key's item, naming its tenant. It lets the key in only while the tenant's
   * item names the same hash (or names none: a tenant made before keys could be
   * rotated). Its hash is of 32 random bytes: a refusal is this write's own first try,
   * applied with its answer lost and sent again by the SDK.
   */
  async putKey(keyHash: string, tenantId: string): Promise<void> {
    try {
      await this.#client.send(
        new PutCommand({
          TableName: this.#table,
          Item: { pk: keyPk(keyHash), sk: KEY_SK, tenant_id: tenantId },
          ConditionExpression: 'attribute_not_exists(#pk)',
          ExpressionAttributeNames: names('pk'),
        }),
      );
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
      const stored = await this.#client.send(
        new GetCommand({ TableName: this.#table, Key: { pk: keyPk(keyHash), sk: KEY_SK }, ConsistentRead: true }),
      );
      if (stored.Item?.tenant_id !== tenantId) throw error;
    }
  }

  /** Removes a key's item, if it is this tenant's (a key no longer named by its tenant lets nobody in: this is tidying). */
  async deleteKey(keyHash: string, tenantId: string): Promise<void> {
    try {
      await this.#client.send(
        new DeleteCommand({
          TableName: this.#table,
          Key: { pk: keyPk(keyHash), sk: KEY_SK },
          ConditionExpression: '#tenant_id = :tenant',
          ExpressionAttributeNames: names('tenant_id'),
          ExpressionAttributeValues: { ':tenant': tenantId },
        }),
      );
    } catch (error) {
      // Gone already (a retried delete that applied): what was asked is done.
      if (!isConditionFailure(error)) throw error;
    }
  }

  /**
   * The hash of the tenant's working key: undefined when there is no such tenant (or it
   * is being deleted), null
   * for a tenant made before keys could be rotated (its key item alone lets it in).
   */
  async keyHashOf(tenantId: string): Promise<string | null | undefined> {
    const result = await this.#client.send(
      new GetCommand({
        TableName: this.#table,
        Key: { pk: tenantPk(tenantId), sk: TENANT_SK },
        ProjectionExpression: '#key_hash, #id, #deleting_at',
        ExpressionAttributeNames: names('key_hash', 'id', 'deleting_at'),
        ConsistentRead: true,
      }),
    );
    if (!result.Item || result.Item.deleting_at !== undefined) return undefined;
    return typeof result.Item.key_hash === 'string' ? result.Item.key_hash : null;
  }

  /**
   * Makes `to` the tenant's one working key, if `from` still is (null: the tenant names
   * none yet). One conditional write, so the old key stops and the new one starts at the
   * same moment (for the authorizer; API Gateway's cache may keep an old answer for its
   * time), and two rotations at once cannot both win. Answers `taken` when another
   * rotation came first, `gone` when the tenant is (or is being deleted); a refusal of
   * the SDK's retry of this very write, whose first try applied, is `switched`.
   */
  async switchKey(tenantId: string, from: string | null, to: string): Promise<'switched' | 'taken' | 'gone'> {
    try {
      await this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: tenantPk(tenantId), sk: TENANT_SK },
          UpdateExpression: 'SET #key_hash = :to',
          // Not on a tenant being deleted: its deletion removed the key item it read, and
          // would leave the new one behind, letting its holder in until the tenant is gone.
          ConditionExpression:
            from === null
              ? 'attribute_exists(#pk) AND attribute_not_exists(#deleting_at) AND attribute_not_exists(#key_hash)'
              : 'attribute_exists(#pk) AND attribute_not_exists(#deleting_at) AND #key_hash = :from',
          ExpressionAttributeNames: names('pk', 'key_hash', 'deleting_at'),
          ExpressionAttributeValues: { ':to': to, ...(from !== null && { ':from': from }) },
        }),
      );
      return 'switched';
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
      const current = await this.keyHashOf(tenantId);
      return current === undefined ? 'gone' : current === to ? 'switched' : 'taken';
    }
  }

  /**
   * Changes a tenant's name or some of its limits (the others are kept); answers the
   * tenant as it now is, with the ids of its throttle, or undefined when there is none.
   */
  async update(
    tenantId: string,
    change: { readonly name?: string; readonly limits?: Partial<TenantLimits> },
  ): Promise<{ tenant: Tenant; provisioning: Record<string, string> } | undefined> {
    const sets: string[] = [];
    const values: Record<string, unknown> = {};
    const attributes = ['pk'];
    if (change.name !== undefined) {
      sets.push('#name = :name');
      values[':name'] = change.name;
      attributes.push('name');
    }
    for (const [field, value] of Object.entries(change.limits ?? {})) {
      // Field names come from validation (TenantLimits' keys): safe as placeholder names.
      sets.push(`#limits.#${field} = :${field}`);
      values[`:${field}`] = value;
      attributes.push('limits', field);
    }
    try {
      const result = await this.#client.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: { pk: tenantPk(tenantId), sk: TENANT_SK },
          UpdateExpression: `SET ${sets.join(', ')}`,
          ConditionExpression: 'attribute_exists(#pk) AND attribute_not_exists(#deleting_at)',
          ExpressionAttributeNames: names(...new Set([...attributes, 'deleting_at'])),
          ExpressionAttributeValues: values,
          ReturnValues: 'ALL_NEW',
        }),
      );
      const item = result.Attributes ?? {};
      const tenant = toTenant(item);
      if (change.name !== undefined) await this.#renameEntry(tenant);
      return { tenant, provisioning: (item.provisioning as Record<string, string> | undefined) ?? {} };
    } catch (error) {
      if (isConditionFailure(error)) return undefined;
      throw error;
    }
  }

  /**
   * Deletes the tenant's item and what else its partition keeps once its webhooks are
   * gone: its subscriptions version, which no TTL removes and no API reaches after this.
   * The version goes first, so that a deletion that fails in between is sent again.
   */
  async delete(tenantId: string): Promise<void> {
    await this.#client.send(new DeleteCommand({ TableName: this.#table, Key: { pk: tenantPk(tenantId), sk: SUBSCRIPTIONS_SK } }));
    await this.#client.send(new DeleteCommand({ TableName: this.#table, Key: { pk: tenantPk(tenantId), sk: TENANT_SK } }));
    await this.#deleteEntry(tenantId);
  }

  /** The tenant, or undefined when there is none, or it is being deleted (see beginDeletion). */
  async get(tenantId: string): Promise<Tenant | undefined> {
    const result = await this.#client.send(
      new GetCommand({ TableName: this.#table, Key: { pk: tenantPk(tenantId), sk: TENANT_SK }, ConsistentRead: true }),
    );
    return result.Item && result.Item.deleting_at === undefined ? toTenant(result.Item) : undefined;
  }

  /**
   * Marks the tenant as being deleted (from then on, it is not found: `get`, `keyHashOf`
   * and `update` answer as if it were gone) and answers what its deletion must undo: its
   * key's hash and its throttle's ids. Undefined when there is no such tenant. Marking
   * one already marked changes nothing: a deletion goes on where one before it stopped.
   */
  async beginDeletion(tenantId: string, now: number): Promise<{ keyHash?: string; provisioning: Record<string, string> } | undefined> {
    const item = await markOnce(this.#client, this.#table, { pk: tenantPk(tenantId), sk: TENANT_SK }, 'deleting_at', now);
    // Not listed from now on, as it is not found; and with no tenant, maybe still listed:
    // a list entry a failed creation's cleanup left, or a rename's write of it that came
    // after a deletion had removed it.
    await this.#deleteEntry(tenantId);
    if (!item) return undefined;
    return {
      ...(typeof item.key_hash === 'string' && { keyHash: item.key_hash }),
      provisioning: (item.provisioning as Record<string, string> | undefined) ?? {},
    };
  }

  /**
   * The authorizer's read: which tenant a key hash belongs to, and its usage-plan key:
   * none when the tenant's item names another key (it was rotated away), or when it is
   * being deleted (a deletion whose next step failed leaves the key's item and usage
   * plan, and the tenant must be shut out all the same).
   * Both reads project only AUTHORIZER_ATTRIBUTES, all its role may read. Both are
   * strongly consistent: a key is used as soon as its tenant's creation answers, and a
   * replica that has not seen it yet would have it refused with a Deny, which API
   * Gateway keeps for its cache's time (a minute) whatever the next read would say.
   */
  async findByKeyHash(hash: string): Promise<Pick<Tenant, 'id' | 'usageKey'> | undefined> {
    const key = await this.#client.send(
      new GetCommand({
        TableName: this.#table,
        Key: { pk: keyPk(hash), sk: KEY_SK },
        ProjectionExpression: '#tenant_id',
        ExpressionAttributeNames: names('tenant_id'),
        ConsistentRead: true,
      }),
    );
    const tenantId = key.Item?.tenant_id;
    if (typeof tenantId !== 'string') return undefined;
    const tenant = await this.#client.send(
      new GetCommand({
        TableName: this.#table,
        Key: { pk: tenantPk(tenantId), sk: TENANT_SK },
        ProjectionExpression: '#id, #usage_key, #key_hash, #deleting_at',
        ExpressionAttributeNames: names('id', 'usage_key', 'key_hash', 'deleting_at'),
        ConsistentRead: true,
      }),
    );
    if (!tenant.Item || tenant.Item.deleting_at !== undefined) return undefined;
    // A tenant made before keys could be rotated names no key: its key item decides.
    const current = tenant.Item.key_hash;
    if (typeof current === 'string' && current !== hash) return undefined;
    return { id: String(tenant.Item.id), usageKey: String(tenant.Item.usage_key) };
  }
}
