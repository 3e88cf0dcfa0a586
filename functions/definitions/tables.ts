/**
 * Table definitions, read by the CDK stack and by the sandbox, so that both create
 * the same keys and indexes.
 */

export interface KeyAttribute {
  readonly name: string;
  readonly type: 'S' | 'N';
}

export interface IndexDefinition {
  readonly indexName: string;
  readonly partitionKey: KeyAttribute;
  readonly sortKey: KeyAttribute;
  /** KEYS_ONLY keeps an index from being written when only other attributes change. */
  readonly projection: 'ALL' | 'KEYS_ONLY';
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

/** Tenants, API keys and webhooks; `by_resource` finds the webhooks on a resource. */
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
      projection: 'ALL',
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
  /** The sandbox only: the canary's API key, which AWS keeps in Secrets Manager (adapters/canary-key.ts). */
  canaryKey: 'canary-key',
  /** Every kill switch, under one partition. */
  switches: 'switches',
} as const;

/**
 * The only attributes the authorizer reads (a key's tenant id, then that tenant's id
 * and usage-plan key), and the only ones its role may: webhook items, with their
 * signing secrets, share the tenant's partition, which LeadingKeys alone cannot keep
 * them out of. Its reads name these in a projection (adapters/tenant-store.ts).
 */
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

export const AUTHORIZER_ATTRIBUTES = ['pk', 'sk', 'tenant_id', 'id', 'usage_key'] as const;
