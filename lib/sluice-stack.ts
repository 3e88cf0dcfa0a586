/**
 * The `Sluice` stack: one Sluice construct, configured from cdk.json context `sluice`,
 * and the outputs a deployer needs, under the names the README gives them (an output
 * made inside the construct would get a hashed name).
 */
import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { Sluice } from './sluice.ts';

export interface SluiceStackProps extends StackProps {
  /** Config overrides (cdk.json context `sluice`). @default {} */
  readonly config?: Readonly<Record<string, unknown>>;
}

export class SluiceStack extends Stack {
  readonly sluice: Sluice;

  constructor(scope: Construct, id: string, props: SluiceStackProps = {}) {
    super(scope, id, props);
    this.sluice = new Sluice(this, 'Sluice', { config: props.config ?? {} });
    const { onCallTopic, api, webhookDisabledTopic, adminKeySecret } = this.sluice;
    new CfnOutput(this, 'OnCallTopicArn', {
      value: onCallTopic.topicArn,
      description: 'SNS: every sluice alarm, its description starting PAGE or TICKET',
    });
    new CfnOutput(this, 'ApiUrl', { value: api.url, description: 'Base URL; routes start with v1/' });
    new CfnOutput(this, 'WebhookDisabledTopicArn', { value: webhookDisabledTopic.topicArn, description: 'SNS: a webhook was disabled' });
    new CfnOutput(this, 'AdminKeySecretArn', {
      value: adminKeySecret.secretArn,
      description: 'The admin key is ak_ followed by this secret’s token field',
    });
  }
}
