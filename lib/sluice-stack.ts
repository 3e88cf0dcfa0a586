/**
 * The `Sluice` stack: one Sluice construct, configured from cdk.json context `sluice`,
 * and the outputs a deployer needs, under the names the README gives them (an output
 * made inside the construct would get a hashed name).
 */
import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { withProblems } from '../functions/core/config.ts';
import { deployChoicesFromContext, overridesFromContext } from './context.ts';
import { Sluice, type SluiceProps } from './sluice.ts';

export interface SluiceStackProps extends StackProps, Pick<SluiceProps, 'tableRemovalPolicy' | 'apiGatewayCloudWatchRole'> {
  /** Config overrides (cdk.json context `sluice`). @default {} */
  readonly config?: Readonly<Record<string, unknown>>;
}

export class SluiceStack extends Stack {
  readonly sluice: Sluice;

  constructor(scope: Construct, id: string, props: SluiceStackProps = {}) {
    super(scope, id, props);
    const { config = {}, tableRemovalPolicy, apiGatewayCloudWatchRole } = props;
    this.sluice = new Sluice(this, 'Sluice', { config, tableRemovalPolicy, apiGatewayCloudWatchRole });
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

/**
 * The stack `npx cdk deploy` deploys (bin/sluice.ts), made from the app's context: the
 * settings under `sluice`, and the deploy's own choices, whose problems are listed with
 * the settings' in one message.
 */
export function stackFromContext(app: Construct, id: string, props: StackProps = {}): SluiceStack {
  const { problems, ...choices } = deployChoicesFromContext(app);
  return new SluiceStack(app, id, { ...props, config: withProblems(overridesFromContext(app), problems), ...choices });
}
