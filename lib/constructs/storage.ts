/** The DynamoDB tables, built from the same definitions the sandbox uses. */
import type { RemovalPolicy } from 'aws-cdk-lib';
import { type Attribute, AttributeType, Billing, ProjectionType, TableEncryptionV2, TableV2 } from 'aws-cdk-lib/aws-dynamodb';
import { Construct } from 'constructs';
import type { KeyAttribute, TableDefinition } from '../../functions/definitions/tables.ts';
import { CONTROL_TABLE, EVENTS_TABLE, projectionOf } from '../../functions/definitions/tables.ts';

function attribute(key: KeyAttribute): Attribute {
  return { name: key.name, type: key.type === 'S' ? AttributeType.STRING : AttributeType.NUMBER };
}

export function tableFromDefinition(scope: Construct, definition: TableDefinition, removalPolicy: RemovalPolicy): TableV2 {
  return new TableV2(scope, definition.logicalName, {
    partitionKey: attribute(definition.partitionKey),
    sortKey: attribute(definition.sortKey),
    billing: Billing.onDemand(),
    encryption: TableEncryptionV2.awsManagedKey(),
    pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
    timeToLiveAttribute: definition.ttlAttribute,
    removalPolicy,
    globalSecondaryIndexes: definition.indexes.map((index) => {
      const projection = projectionOf(index);
      return {
        indexName: index.indexName,
        partitionKey: attribute(index.partitionKey),
        sortKey: attribute(index.sortKey),
        projectionType: projection.type === 'KEYS_ONLY' ? ProjectionType.KEYS_ONLY : ProjectionType.INCLUDE,
        nonKeyAttributes: projection.nonKeyAttributes,
      };
    }),
  });
}

export interface StorageProps {
  readonly removalPolicy: RemovalPolicy;
}

export class Storage extends Construct {
  /** Per-object queues and idempotency records. */
  readonly events: TableV2;
  /** Tenants, API key hashes and webhooks. */
  readonly control: TableV2;

  constructor(scope: Construct, id: string, props: StorageProps) {
    super(scope, id);
    this.events = tableFromDefinition(this, EVENTS_TABLE, props.removalPolicy);
    this.control = tableFromDefinition(this, CONTROL_TABLE, props.removalPolicy);
  }
}
