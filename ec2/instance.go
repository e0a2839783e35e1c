package ec2

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// DisableSourceDestCheck turns off the source/destination check of an instance so it may
// forward traffic that is neither from nor to itself. It reads the attribute first and changes
// nothing when the check is already off.
func (c *Client) DisableSourceDestCheck(ctx context.Context, instanceID string) error {
	out, err := c.api.DescribeInstanceAttribute(ctx, &ec2sdk.DescribeInstanceAttributeInput{
		InstanceId: aws.String(instanceID),
		Attribute:  types.InstanceAttributeNameSourceDestCheck,
	})
	if err != nil {
		return fmt.Errorf("read source/dest check of %s: %w", instanceID, err)
	}
	if out.SourceDestCheck != nil && !aws.ToBool(out.SourceDestCheck.Value) {
		return nil
	}
	if _, err := c.api.ModifyInstanceAttribute(ctx, &ec2sdk.ModifyInstanceAttributeInput{
		InstanceId:      aws.String(instanceID),
		SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(false)},
	}); err != nil {
		return fmt.Errorf("disable source/dest check of %s: %w", instanceID, err)
	}
	c.log.Info("disabled source/dest check", "instance", instanceID)
	return nil
}
