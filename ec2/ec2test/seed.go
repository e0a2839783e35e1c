package ec2test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// WorldSpec describes a VPC to create in moto.
type WorldSpec struct {
	Region     string // default us-east-1
	VPCCIDR    string // default 10.0.0.0/16
	SubnetCIDR string // the public subnet the instances run in; default 10.0.0.0/24
	// Instances are launched in the public subnet.
	Instances []InstanceSpec
	// RouteTables are created in the VPC besides its main route table.
	RouteTables []RouteTableSpec
	// EIPOwner is the index in Instances the Elastic IP is associated with; -1 leaves it
	// unassociated.
	EIPOwner int
}

// InstanceSpec is one instance to launch.
type InstanceSpec struct {
	Name      string // Name tag
	PrivateIP string // "" lets moto choose
	// SecondENI attaches a second network interface (device index 1) in a private subnet of
	// its own, as NAT instances with a separate private interface have. The instances'
	// subnet is then made public: its route table sends 0.0.0.0/0 to the internet gateway.
	SecondENI bool
	// SecondaryIPs are assigned to its primary interface as secondary private addresses
	// (AssignPrivateIpAddresses), e.g. one per group the instance may hold.
	SecondaryIPs []string
}

// RouteTableSpec is one route table to create.
type RouteTableSpec struct {
	Name string // Name tag
	// DefaultTo is the index in Instances its 0.0.0.0/0 route points at; -1 creates no default
	// route.
	DefaultTo int
	Tags      map[string]string
	// SubnetCIDR, when set, creates a subnet associated with this table.
	SubnetCIDR string
}

// World is what Seed created.
type World struct {
	Region        string
	VPCID         string
	SubnetID      string
	Instances     []SeededInstance
	RouteTableIDs []string // in the order of WorldSpec.RouteTables
	AllocationID  string
	PublicIP      string
}

// SeededInstance is one launched instance.
type SeededInstance struct {
	ID, ENIID, PrivateIP string
	// SecondENIID is the interface InstanceSpec.SecondENI attached, "" without.
	SecondENIID string
	// SecondaryIPs are InstanceSpec.SecondaryIPs, assigned to ENIID.
	SecondaryIPs []string
}

// API returns an SDK client for endpoint with test credentials, for raw calls in tests.
func API(endpoint, region string) *ec2.Client {
	if region == "" {
		region = DefaultRegion
	}
	return ec2.New(ec2.Options{
		Region:       region,
		BaseEndpoint: aws.String(endpoint),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: TestAccessKey, SecretAccessKey: TestSecretKey, Source: "ec2test"}, nil
		}),
	})
}

// Seed creates spec in the moto server at endpoint through the SDK.
func Seed(ctx context.Context, endpoint string, spec WorldSpec) (World, error) {
	if spec.Region == "" {
		spec.Region = DefaultRegion
	}
	if spec.VPCCIDR == "" {
		spec.VPCCIDR = "10.0.0.0/16"
	}
	if spec.SubnetCIDR == "" {
		p, err := netip.ParsePrefix(spec.VPCCIDR)
		if err != nil {
			return World{}, fmt.Errorf("seed: vpc cidr %q: %w", spec.VPCCIDR, err)
		}
		spec.SubnetCIDR = netip.PrefixFrom(p.Addr(), 24).String()
	}
	api := API(endpoint, spec.Region)
	w := World{Region: spec.Region}

	vpc, err := api.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String(spec.VPCCIDR)})
	if err != nil {
		return w, fmt.Errorf("seed: create vpc: %w", err)
	}
	w.VPCID = aws.ToString(vpc.Vpc.VpcId)

	igw, err := api.CreateInternetGateway(ctx, &ec2.CreateInternetGatewayInput{})
	if err != nil {
		return w, fmt.Errorf("seed: create internet gateway: %w", err)
	}
	if _, err := api.AttachInternetGateway(ctx, &ec2.AttachInternetGatewayInput{
		InternetGatewayId: igw.InternetGateway.InternetGatewayId, VpcId: aws.String(w.VPCID),
	}); err != nil {
		return w, fmt.Errorf("seed: attach internet gateway: %w", err)
	}

	sub, err := api.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: aws.String(w.VPCID), CidrBlock: aws.String(spec.SubnetCIDR)})
	if err != nil {
		return w, fmt.Errorf("seed: create subnet %s: %w", spec.SubnetCIDR, err)
	}
	w.SubnetID = aws.ToString(sub.Subnet.SubnetId)

	for _, is := range spec.Instances {
		in := &ec2.RunInstancesInput{
			ImageId:      aws.String("ami-12c6146b"),
			InstanceType: types.InstanceTypeT3Micro,
			MinCount:     aws.Int32(1),
			MaxCount:     aws.Int32(1),
			SubnetId:     aws.String(w.SubnetID),
			TagSpecifications: []types.TagSpecification{{
				ResourceType: types.ResourceTypeInstance,
				Tags:         []types.Tag{{Key: aws.String("Name"), Value: aws.String(is.Name)}},
			}},
		}
		if is.PrivateIP != "" {
			in.PrivateIpAddress = aws.String(is.PrivateIP)
		}
		out, err := api.RunInstances(ctx, in)
		if err != nil {
			return w, fmt.Errorf("seed: run instance %q: %w", is.Name, err)
		}
		inst := out.Instances[0]
		si := SeededInstance{ID: aws.ToString(inst.InstanceId), PrivateIP: aws.ToString(inst.PrivateIpAddress)}
		for _, ni := range inst.NetworkInterfaces {
			if ni.Attachment != nil && aws.ToInt32(ni.Attachment.DeviceIndex) == 0 {
				si.ENIID = aws.ToString(ni.NetworkInterfaceId)
			}
		}
		if len(is.SecondaryIPs) > 0 {
			if _, err := api.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{
				NetworkInterfaceId: aws.String(si.ENIID), PrivateIpAddresses: is.SecondaryIPs,
			}); err != nil {
				return w, fmt.Errorf("seed: assign %v to %s: %w", is.SecondaryIPs, si.ENIID, err)
			}
			si.SecondaryIPs = is.SecondaryIPs
		}
		w.Instances = append(w.Instances, si)
	}
	if err := seedSecondENIs(ctx, api, spec, &w, aws.ToString(igw.InternetGateway.InternetGatewayId)); err != nil {
		return w, err
	}

	for i, rs := range spec.RouteTables {
		tags := []types.Tag{{Key: aws.String("Name"), Value: aws.String(rs.Name)}}
		for k, v := range rs.Tags {
			tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
		}
		rt, err := api.CreateRouteTable(ctx, &ec2.CreateRouteTableInput{
			VpcId:             aws.String(w.VPCID),
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeRouteTable, Tags: tags}},
		})
		if err != nil {
			return w, fmt.Errorf("seed: create route table %q: %w", rs.Name, err)
		}
		id := aws.ToString(rt.RouteTable.RouteTableId)
		w.RouteTableIDs = append(w.RouteTableIDs, id)
		if rs.DefaultTo >= 0 {
			if rs.DefaultTo >= len(w.Instances) {
				return w, fmt.Errorf("seed: route table %d: default to instance %d of %d", i, rs.DefaultTo, len(w.Instances))
			}
			_, err := api.CreateRoute(ctx, &ec2.CreateRouteInput{
				RouteTableId:         aws.String(id),
				DestinationCidrBlock: aws.String("0.0.0.0/0"),
				InstanceId:           aws.String(w.Instances[rs.DefaultTo].ID),
			})
			var ae smithy.APIError
			if errors.As(err, &ae) && ae.ErrorCode() == "RouteAlreadyExists" {
				// The SDK retried a call whose first attempt had gone through (a busy
				// moto answered too late): the route is there; make sure of its target.
				_, err = api.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{
					RouteTableId:         aws.String(id),
					DestinationCidrBlock: aws.String("0.0.0.0/0"),
					InstanceId:           aws.String(w.Instances[rs.DefaultTo].ID),
				})
			}
			if err != nil {
				return w, fmt.Errorf("seed: default route in %s: %w", id, err)
			}
		}
		if rs.SubnetCIDR != "" {
			s, err := api.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: aws.String(w.VPCID), CidrBlock: aws.String(rs.SubnetCIDR)})
			if err != nil {
				return w, fmt.Errorf("seed: create subnet %s: %w", rs.SubnetCIDR, err)
			}
			if _, err := api.AssociateRouteTable(ctx, &ec2.AssociateRouteTableInput{
				RouteTableId: aws.String(id), SubnetId: s.Subnet.SubnetId,
			}); err != nil {
				return w, fmt.Errorf("seed: associate %s with %s: %w", id, aws.ToString(s.Subnet.SubnetId), err)
			}
		}
	}

	addr, err := api.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: types.DomainTypeVpc})
	if err != nil {
		return w, fmt.Errorf("seed: allocate address: %w", err)
	}
	w.AllocationID, w.PublicIP = aws.ToString(addr.AllocationId), aws.ToString(addr.PublicIp)
	if spec.EIPOwner >= 0 && spec.EIPOwner < len(w.Instances) {
		if _, err := api.AssociateAddress(ctx, &ec2.AssociateAddressInput{
			AllocationId: aws.String(w.AllocationID),
			InstanceId:   aws.String(w.Instances[spec.EIPOwner].ID),
		}); err != nil {
			return w, fmt.Errorf("seed: associate address: %w", err)
		}
	}
	return w, nil
}

// seedSecondENIs gives the instances that ask for it a second interface in a private subnet
// (the last /24 of the VPC), and makes the instances' subnet public.
func seedSecondENIs(ctx context.Context, api *ec2.Client, spec WorldSpec, w *World, igw string) error {
	var private *string
	for i, is := range spec.Instances {
		if !is.SecondENI {
			continue
		}
		if private == nil {
			vpc, err := netip.ParsePrefix(spec.VPCCIDR)
			if err != nil {
				return fmt.Errorf("seed: vpc cidr %q: %w", spec.VPCCIDR, err)
			}
			a := vpc.Addr().As4()
			a[2] = 255
			cidr := netip.PrefixFrom(netip.AddrFrom4(a), 24).String()
			s, err := api.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: aws.String(w.VPCID), CidrBlock: aws.String(cidr)})
			if err != nil {
				return fmt.Errorf("seed: create private subnet %s: %w", cidr, err)
			}
			private = s.Subnet.SubnetId
			rt, err := api.CreateRouteTable(ctx, &ec2.CreateRouteTableInput{VpcId: aws.String(w.VPCID)})
			if err != nil {
				return fmt.Errorf("seed: create public route table: %w", err)
			}
			if _, err := api.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: rt.RouteTable.RouteTableId,
				DestinationCidrBlock: aws.String("0.0.0.0/0"), GatewayId: aws.String(igw)}); err != nil {
				return fmt.Errorf("seed: route to the internet gateway: %w", err)
			}
			if _, err := api.AssociateRouteTable(ctx, &ec2.AssociateRouteTableInput{RouteTableId: rt.RouteTable.RouteTableId,
				SubnetId: aws.String(w.SubnetID)}); err != nil {
				return fmt.Errorf("seed: associate the public route table: %w", err)
			}
		}
		ni, err := api.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: private})
		if err != nil {
			return fmt.Errorf("seed: create second interface of %q: %w", is.Name, err)
		}
		if _, err := api.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{DeviceIndex: aws.Int32(1),
			InstanceId: aws.String(w.Instances[i].ID), NetworkInterfaceId: ni.NetworkInterface.NetworkInterfaceId}); err != nil {
			return fmt.Errorf("seed: attach second interface to %q: %w", is.Name, err)
		}
		w.Instances[i].SecondENIID = aws.ToString(ni.NetworkInterface.NetworkInterfaceId)
	}
	return nil
}
