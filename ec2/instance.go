package ec2

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

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

// resolveSelf returns who self is, describing self and any discovery target not yet cached in
// one call. A failed lookup is an error only when something needed is still unknown.
func (c *Client) resolveSelf(ctx context.Context, g Group, self Self) (me, error) {
	if self.InstanceID == "" {
		return me{}, errors.New("resolve self: no instance id")
	}
	var need []string
	c.mu.Lock()
	for _, id := range append([]string{self.InstanceID}, g.DiscoverTargets...) {
		if _, ok := c.instances[id]; !ok && !slices.Contains(need, id) {
			need = append(need, id)
		}
	}
	c.mu.Unlock()
	var lookupErr error
	if len(need) > 0 {
		if _, err := c.describeInstances(ctx, need); err != nil {
			lookupErr = err
		}
	}
	c.mu.Lock()
	info := c.instances[self.InstanceID]
	c.mu.Unlock()
	m := me{instanceID: self.InstanceID, eni: self.ENIID, vpcID: g.VPCID, enis: info.enis, targetENI: self.TargetENI, primaryENI: info.primaryENI}
	if m.eni == "" {
		m.eni = info.primaryENI
	}
	if m.vpcID == "" {
		m.vpcID = info.vpcID
	}
	needENI := self.TargetENI && m.eni == ""
	switch {
	case (m.vpcID == "" || needENI) && lookupErr != nil:
		return m, fmt.Errorf("resolve self %s: %w", self.InstanceID, lookupErr)
	case (m.vpcID == "" || needENI) && !info.found:
		return m, fmt.Errorf("resolve self: instance %s not found", self.InstanceID)
	case m.vpcID == "":
		return m, fmt.Errorf("resolve self: vpc of instance %s unknown", self.InstanceID)
	case needENI:
		return m, fmt.Errorf("resolve self: instance %s has no primary network interface", self.InstanceID)
	}
	if self.ENIID != "" && !slices.Contains(m.enis, self.ENIID) {
		m.enis = append(slices.Clone(m.enis), self.ENIID)
	}
	if !self.TargetENI && len(info.attached) > 1 {
		if info.multi == nil {
			t, err := c.pickTargets(ctx, m.vpcID, slices.Clone(info.attached))
			if err != nil {
				return m, fmt.Errorf("resolve self: choose among the %d network interfaces of %s: %w", len(info.attached), self.InstanceID, err)
			}
			c.log.Info("this instance has several network interfaces: EC2 takes no instance id as a target, so they are named",
				"instance", self.InstanceID, "elastic_ip_on", t.eip, "routes_to", t.route)
			c.mu.Lock()
			if cur, ok := c.instances[self.InstanceID]; ok && slices.Equal(cur.enis, info.enis) {
				cur.multi = &t
				c.instances[self.InstanceID] = cur
			}
			c.mu.Unlock()
			info.multi = &t
		}
		m.multi = *info.multi
	}
	m.pinAddress(g, info)
	return m, nil
}

// describeInstances describes ids (unknown ones are simply absent) and refreshes the cache.
func (c *Client) describeInstances(ctx context.Context, ids []string) (map[string]Instance, error) {
	out := make(map[string]Instance, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	p := ec2sdk.NewDescribeInstancesPaginator(c.api, &ec2sdk.DescribeInstancesInput{
		Filters: []types.Filter{{Name: aws.String("instance-id"), Values: ids}},
	})
	seen := map[string]instanceInfo{}
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describe instances %s: %w", strings.Join(ids, ","), err)
		}
		for _, r := range page.Reservations {
			for _, in := range r.Instances {
				id := aws.ToString(in.InstanceId)
				info := instanceInfo{found: true, vpcID: aws.ToString(in.VpcId)}
				for _, ni := range in.NetworkInterfaces {
					eni := aws.ToString(ni.NetworkInterfaceId)
					info.enis = append(info.enis, eni)
					var index int32
					if ni.Attachment != nil {
						index = aws.ToInt32(ni.Attachment.DeviceIndex)
					}
					if index == 0 {
						info.primaryENI = eni
					}
					info.attached = append(info.attached, attachedENI{id: eni, subnet: aws.ToString(ni.SubnetId), index: index,
						addrs: orderAddresses(ni.PrivateIpAddresses, aws.ToString(ni.PrivateIpAddress))})
				}
				state := InstanceStateUnknown
				if in.State != nil && in.State.Name != "" {
					state = string(in.State.Name)
				}
				out[id] = Instance{ID: id, State: state, PrivateIP: aws.ToString(in.PrivateIpAddress), ENIID: info.primaryENI, VPCID: info.vpcID}
				seen[id] = info
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		info, ok := seen[id]
		if !ok {
			if old, had := c.instances[id]; had && old.found {
				continue // keep what we knew; EC2 forgets terminated instances after a while
			}
			c.instances[id] = instanceInfo{}
			continue
		}
		if old := c.instances[id]; old.multi != nil && slices.Equal(old.enis, info.enis) {
			info.multi = old.multi // the same interfaces: the same choice
		}
		c.instances[id] = info
		for _, eni := range info.enis {
			c.eniOwner[eni] = id
		}
	}
	return out, nil
}

// InstanceState reports the state of each instance; ids EC2 does not know are "unknown".
func (c *Client) InstanceState(ctx context.Context, ids ...string) (map[string]Instance, error) {
	got, err := c.describeInstances(ctx, ids)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if _, ok := got[id]; !ok {
			got[id] = Instance{ID: id, State: InstanceStateUnknown}
		}
	}
	return got, nil
}
