/**
 * Table definitions, read by the CDK stack and by the sandbox, so that both create
 * the same keys and indexes, and what each function may do to each table.
 */
import type { FUNCTION_ENTRIES } from './environment.ts';

export interface KeyAttribute {
  readonly name: string;
  readonly type: 'S' | 'N';
}

export interface IndexDefinition {
  readonly indexName: string;
  readonly partitionKey: KeyAttribute;
  readonly sortKey: KeyAttribute;
  /**
   * The attributes the index holds besides the keys: none (KEYS_ONLY), or only those
   * its readers ask for. Either keeps the index from being written when only other
   * attributes change, and keeps the rest out of it.
   */
  readonly projection: 'KEYS_ONLY' | { readonly include: readonly string[] };
}

/** DynamoDB's name for an index's projection, and the attributes an INCLUDE one adds to the keys. */
export function projectionOf(index: IndexDefinition): { type: 'KEYS_ONLY' | 'INCLUDE'; nonKeyAttributes?: string[] } {
  return index.projection === 'KEYS_ONLY' ? { type: 'KEYS_ONLY' } : { type: 'INCLUDE', nonKeyAttributes: [...index.projection.include] };
}

export interface TableDefinition {
  /** Logical name: the CDK construct id and the sandbox's table name. */
  readonly logicalName: string;
  readonly partitionKey: KeyAttribute;
  readonly sortKey: KeyAttribute;
  /** Epoch-seconds attribute that DynamoDB TTL deletes by (late: reads check it too). */
  readonly ttlAttribute: string;
  readonly indexes: readonly IndexDefinition[];
}

/** Shards of the `by_schedule` index, so no one index partition holds every scheduled object. */
export const SCHEDULE_SHARDS = 16;

/**
 * Per-object queues: one meta item per (tenant, resource) and its events by slot;
 * idempotency records. `by_schedule` is sparse: only meta items of scheduled
 * objects, and of objects idle for less than the reconciler's linger (ten
 * minutes), carry its keys, so the reconciler and `GET /v1/admin/queues` read the
 * objects that have work without scanning the table. The linger spares an active
 * object's every event an index put and delete.
 */
/** The index of scheduled objects on the events table, and that of webhooks by resource on the control table. */
export const SCHEDULE_INDEX = 'by_schedule';
export const BY_RESOURCE_INDEX = 'by_resource';
/**
 * The index of webhooks watched for a lost chain, on the control table (see webhook-store.ts
 * `saveHealth`): sparse, keys only, in CHAIN_SHARDS partitions the reconciler reads one a run.
 */
export const CHAINS_INDEX = 'by_chain';
/** Shards of `by_chain`: the reconciler reads one a run, so each listed webhook is checked every CHAIN_SHARDS runs. */
export const CHAIN_SHARDS = 5;
/** The prefix of a `by_chain` shard's partition key (`chain#0` to `chain#4`). */
export const CHAIN_SHARD_PREFIX = 'chain#';

export const EVENTS_TABLE: TableDefinition = {
  logicalName: 'Events',
  partitionKey: { name: 'pk', type: 'S' },
  sortKey: { name: 'sk', type: 'S' },
  ttlAttribute: 'expires_at',
  indexes: [
    {
      indexName: SCHEDULE_INDEX,
      partitionKey: { name: 'sched_shard', type: 'S' },
      sortKey: { name: 'sched_key', type: 'S' },
      projection: 'KEYS_ONLY',
    },
  ],
};

/**
 * Tenants, API keys and webhooks; `by_resource` finds the webhooks on a resource, with
 * what the distributor's fan-out reads of them (webhook-store.ts `onResource`): not
 * their URLs or signing secrets, and not their health, so a failed attempt's update of
 * a webhook's health writes the item alone.
 */
export const CONTROL_TABLE: TableDefinition = {
  logicalName: 'Control',
  partitionKey: { name: 'pk', type: 'S' },
  sortKey: { name: 'sk', type: 'S' },
  ttlAttribute: 'expires_at',
  indexes: [
    {
      indexName: BY_RESOURCE_INDEX,
      partitionKey: { name: 'gsi1pk', type: 'S' },
      sortKey: { name: 'gsi1sk', type: 'S' },
      projection: { include: ['id', 'tenant_id', 'resource', 'types', 'status'] },
    },
    {
      indexName: CHAINS_INDEX,
      partitionKey: { name: 'chain_shard', type: 'S' },
      sortKey: { name: 'chain_sk', type: 'S' },
      projection: 'KEYS_ONLY',
    },
  ],
};

export const TABLES = [EVENTS_TABLE, CONTROL_TABLE] as const;

/**
 * Partition key prefixes of the control table that IAM policies name: functions
 * allowed only some items (the authorizer, the canary) are limited to these.
 */
export const CONTROL_PK = {
  /** `apikey#<sha256>`: which tenant a key belongs to. */
  apiKey: 'apikey#',
  /** `tenant#<id>`: the tenant item, and its webhooks and subscriptions version. */
  tenant: 'tenant#',
  /** The canary's own tenant and webhook (its tenant's API key is in a secret of its own). */
  canary: 'canary',
  /** The latest tick of each of the canary's two paths that reached its receiver (adapters/canary-store.ts). */
  canaryArrivals: 'canary-arrivals',
  /** The sandbox only: the canary's API key, which AWS keeps in Secrets Manager (adapters/canary-key.ts). */
  canaryKey: 'canary-key',
  /** Every kill switch, under one partition. */
  switches: 'switches',
  /** Every tenant's entry in the admin's list (id, name, created_at), under one partition, in id (creation) order. */
  tenants: 'tenants',
  /** `<kind>#<webhook id>`: what the delivery stage keeps per webhook (adapters/webhook-items.ts and its stores). */
  attempts: 'attempts#',
  deliveries: 'deliveries#',
  held: 'held#',
  overflow: 'overflow#',
  dead: 'dead#',
  rate: 'rate#',
  pace: 'pace#',
} as const;

/** A tenant's partition in the control table: its tenant item, webhooks and subscriptions version. */
export const tenantPk = (tenantId: string) => `${CONTROL_PK.tenant}${tenantId}`;
/** The sort key of the tenant item itself. */
export const TENANT_SK = 'tenant';
/** The sort key of a tenant's subscriptions version (adapters/subscription-cache.ts), in the tenant's partition. */
export const SUBSCRIPTIONS_SK = 'subscriptions';

/**
 * What the distributor may read of the control table. It signs nothing, so not the
 * webhooks' signing secrets, which share their tenant's partition and are projected
 * into the `by_resource` index it queries: every read it makes names its attributes
 * in a projection, from these: a webhook's id, tenant, resource, types and status
 * (webhook-store.ts `onResource`), the subscriptions version (subscription-cache.ts),
 * a stream's expiry (stream-store.ts `streamExpiry`) and the kill switches
 * (switch-store.ts `list`).
 */
export const DISTRIBUTOR_CONTROL_ATTRIBUTES = [
  'pk',
  'sk',
  'gsi1pk',
  'gsi1sk',
  'id',
  'tenant_id',
  'resource',
  'types',
  'status',
  'version',
  'bumped_at',
  'expires_at_ms',
  'scope',
  'tenant',
  'target',
  'action',
  'reason',
  'created_at',
  'lifted_at',
] as const;

/**
 * The only attributes the authorizer reads (a key's tenant id, then that tenant's id,
 * usage-plan key, the hash of its one working key and whether it is being deleted), and
 * the only ones its role may:
 * webhook items, with their signing secrets, share the tenant's partition, which
 * LeadingKeys alone cannot keep them out of. Its reads name these in a projection
 * (adapters/tenant-store.ts).
 */
export const AUTHORIZER_ATTRIBUTES = ['pk', 'sk', 'tenant_id', 'id', 'usage_key', 'key_hash', 'deleting_at'] as const;

/**
 * The only attributes the delivery function may write in a tenant's partition: its
 * webhooks' state (health, probe and release chains, disable notices, held counts, a
 * slow endpoint's pace) and the tenant's subscriptions version. LeadingKeys cannot keep
 * it off the tenant's own item in the same partition, whose key hash, usage key, limits
 * and deletion mark must stay the API's to write: the function that POSTs to endpoints
 * anyone may set up should not be able to revive a tenant being deleted, or unset its key.
 */
export const DELIVERY_WEBHOOK_ATTRIBUTES = [
  'pk',
  'sk',
  'health',
  'health_version',
  'health_token',
  'status',
  'updated_at',
  'url',
  'chain_shard',
  'chain_sk',
  'probe_token',
  'release_token',
  'release_at',
  'release_by',
  'release_not_before',
  'notice_pending',
  'notice_claimed_until',
  'notice_claim',
  'held_count',
  'held_token',
  'held_since',
  'held_lost',
  'held_lost_at',
  'held_lost_sent',
  'slow_ms',
  'slow_forgotten',
  'not_before',
  'version',
  'bumped_at',
] as const;

/** A DynamoDB item operation, as the functions' code sends it (lib-dynamodb's commands). */
export type TableAction = 'GetItem' | 'BatchGetItem' | 'Query' | 'PutItem' | 'UpdateItem' | 'DeleteItem' | 'BatchWriteItem';

export interface TableAccess {
  /** The operations on the table's items. */
  readonly actions: readonly TableAction[];
  /** The indexes it queries. */
  readonly indexes?: readonly string[];
  /**
   * Only items whose partition key matches one of these (`*` matches any characters),
   * as IAM's `dynamodb:LeadingKeys`: @default any item of the table
   */
  readonly leadingKeys?: readonly string[];
  /**
   * Only these attributes, as IAM's `dynamodb:Attributes`: every read must name the
   * ones it wants in a projection (one that asks for all of them is refused), and a
   * write may name no other: @default any
   */
  readonly attributes?: readonly string[];
}

/**
 * A function's grants on one table: one, or several that each allow their own actions
 * on their own partitions (a call must fall within one of them, as an IAM request must
 * within one statement).
 */
export type TableGrant = TableAccess | readonly TableAccess[];

export function grantsOf(grant: TableGrant): readonly TableAccess[] {
  return Array.isArray(grant) ? (grant as readonly TableAccess[]) : [grant as TableAccess];
}

/**
 * What each function's code does to each table, and so all that its role allows
 * (the stack grants these, with the conditions that narrow some of them to a few items
 * or attributes; the sandbox refuses any other call of a function, those conditions
 * included, as IAM would).
 * No Scan, streams or transactions anywhere.
 */
export const TABLE_ACCESS = {
  api: {
    // Ingest (reserve, write, void and settle slots), idempotency records, the admin's
    // queue listing (meta items in batches, the oldest pending event, the reconciler's
    // summaries of the index's shards) and stream pages.
    events: {
      actions: ['GetItem', 'BatchGetItem', 'Query', 'PutItem', 'UpdateItem', 'DeleteItem', 'BatchWriteItem'],
      indexes: [SCHEDULE_INDEX],
    },
    // Tenants, keys, webhooks, switches and streams; a deleted webhook's held deliveries
    // go in batches. Nothing reads the control table in batches. A webhook created or
    // given new types is looked for in `by_resource` before the answer (app/webhooks.ts).
    control: { actions: ['GetItem', 'Query', 'PutItem', 'UpdateItem', 'DeleteItem', 'BatchWriteItem'], indexes: [BY_RESOURCE_INDEX] },
  },
  // A key's item, then its tenant's: reads by key, of the few attributes it needs (not
  // the webhooks' secrets in the tenant's partition).
  authorizer: {
    control: { actions: ['GetItem'], leadingKeys: [`${CONTROL_PK.apiKey}*`, `${CONTROL_PK.tenant}*`], attributes: AUTHORIZER_ATTRIBUTES },
  },
  // Meta items read and updated (leases, commits), slots queried, and stream logs
  // appended to in batches; of the control table, reads of what it names (see above):
  // not the webhooks' signing secrets.
  distributor: {
    events: { actions: ['GetItem', 'Query', 'UpdateItem', 'BatchWriteItem'] },
    control: { actions: ['GetItem', 'Query'], indexes: [BY_RESOURCE_INDEX], attributes: DISTRIBUTOR_CONTROL_ATTRIBUTES },
  },
  // Webhooks, attempts, held deliveries, overflow counts, paces and dead letters, one item at a time.
  // Only those partitions, and the switches: it POSTs to endpoints anyone may set up, and
  // must not be able to write a tenant's API key item or read a stream or the canary's item.
  // Of a tenant's partition it reads its webhooks and updates their state (only those
  // attributes), never putting or deleting an item (the tenant's own, or a webhook); the
  // switches it only reads.
  delivery: {
    control: [
      { actions: ['GetItem'], leadingKeys: [`${CONTROL_PK.tenant}*`] },
      { actions: ['UpdateItem'], leadingKeys: [`${CONTROL_PK.tenant}*`], attributes: DELIVERY_WEBHOOK_ATTRIBUTES },
      { actions: ['Query'], leadingKeys: [CONTROL_PK.switches] },
      {
        actions: ['GetItem', 'Query', 'PutItem', 'UpdateItem', 'DeleteItem'],
        leadingKeys: [
          `${CONTROL_PK.attempts}*`,
          `${CONTROL_PK.deliveries}*`,
          `${CONTROL_PK.held}*`,
          `${CONTROL_PK.overflow}*`,
          `${CONTROL_PK.dead}*`,
          `${CONTROL_PK.rate}*`,
          `${CONTROL_PK.pace}*`,
        ],
      },
    ],
  },
  // Listed objects' meta items read in batches, idle ones unlisted and stale leases
  // cleared (updates); of the control table, the kill switches and the keys of the
  // webhooks `by_chain` lists (it reads no webhook: the delivery function checks each).
  reconciler: {
    events: { actions: ['BatchGetItem', 'UpdateItem'], indexes: [SCHEDULE_INDEX] },
    control: [
      { actions: ['Query'], leadingKeys: [CONTROL_PK.switches] },
      // Keys only (no webhook's URL or secret); no leading-keys condition, which IAM
      // would apply to the index's own partition key, where this could not be verified.
      { actions: [], indexes: [CHAINS_INDEX] },
    ],
  },
  // Its own item. The public receiver only reads it (the webhook's secret is in it), and
  // updates an item of its own: which of the canary's ticks arrived (after verifying them).
  canary: { control: { actions: ['GetItem', 'PutItem', 'UpdateItem'], leadingKeys: [CONTROL_PK.canary] } },
  canaryReceiver: {
    control: [
      { actions: ['GetItem'], leadingKeys: [CONTROL_PK.canary] },
      { actions: ['UpdateItem'], leadingKeys: [CONTROL_PK.canaryArrivals] },
    ],
  },
} as const satisfies { readonly [F in keyof typeof FUNCTION_ENTRIES]: { readonly events?: TableGrant; readonly control?: TableGrant } };
