/** Tenants and their API keys (stored as SHA-256 hashes only). */
import { DeleteCommand, type DynamoDBDocumentClient, GetCommand, PutCommand } from '@aws-sdk/lib-dynamodb';
import type { Tenant, TenantLimits } from '../core/model.ts';
import { CONTROL_PK } from '../definitions/tables.ts';
import { names } from './dynamo.ts';

const tenantPk = (id: string) => `${CONTROL_PK.tenant}${id}`;
const TENANT_SK = 'tenant';
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
   * leaves no usable half-tenant (the caller deletes the tenant item).
   */
  async create(tenant: Tenant, keyHash: string, provisioning: Record<string, string>): Promise<void> {
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
          provisioning,
          webhook_count: 0,
          created_at: tenant.createdAt,
        },
        ConditionExpression: 'attribute_not_exists(#pk)',
        ExpressionAttributeNames: names('pk'),
      }),
    );
    await this.#client.send(
      new PutCommand({
        TableName: this.#table,
        Item: { pk: keyPk(keyHash), sk: KEY_SK, tenant_id: tenant.id },
        ConditionExpression: 'attribute_not_exists(#pk)',
        ExpressionAttributeNames: names('pk'),
      }),
    );
  }

  async delete(tenantId: string): Promise<void> {
    await this.#client.send(new DeleteCommand({ TableName: this.#table, Key: { pk: tenantPk(tenantId), sk: TENANT_SK } }));
  }

  async get(tenantId: string): Promise<Tenant | undefined> {
    const result = await this.#client.send(
      new GetCommand({ TableName: this.#table, Key: { pk: tenantPk(tenantId), sk: TENANT_SK }, ConsistentRead: true }),
    );
    return result.Item ? toTenant(result.Item) : undefined;
  }

  /**
   * The authorizer's read: which tenant a key hash belongs to, and its usage-plan key.
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
        ProjectionExpression: '#id, #usage_key',
        ExpressionAttributeNames: names('id', 'usage_key'),
        ConsistentRead: true,
      }),
    );
    return tenant.Item ? { id: String(tenant.Item.id), usageKey: String(tenant.Item.usage_key) } : undefined;
  }
}
