package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Region is the region the lab's EC2 lives in.
const Region = "us-east-1"

// Availability zone of both NATs.
const zone = "us-east-1a"

// Instance is one NAT instance as moto knows it.
type Instance struct {
	Host      string
	ID        string
	ENI       string
	MAC       string
	PrivateIP string
	SubnetID  string
}

// World is what the lab seeded into moto.
type World struct {
	VPCID        string
	PublicSubnet string // the NATs' subnet
	ClientSubnet string // the client's subnet
	Instances    map[string]Instance
	// ClientTable is the route table of the client subnet; the stand-in routes the client
	// by it. ExtraTables are further tables pointing at the owner (more work for a
	// failover, as in a VPC with one private subnet per zone).
	ClientTable  string
	ExtraTables  []string
	AllocationID string
	PublicIP     string
	// Zones is set in the zones lab (zones.go); ClientTable and AllocationID are then group
	// A's.
	Zones *ZoneWorld
}

// Tables returns every managed route table, the client's first.
func (w World) Tables() []string {
	return append([]string{w.ClientTable}, w.ExtraTables...)
}

// HostOf returns the lab host of an instance id, or "" when unknown.
func (w World) HostOf(instanceID string) string {
	for h, in := range w.Instances {
		if in.ID == instanceID && instanceID != "" {
			return h
		}
	}
	return ""
}

// newEC2 returns an SDK client for endpoint with dummy credentials, as every lab client
// uses.
func newEC2(endpoint string) *ec2.Client {
	return ec2.New(ec2.Options{
		Region:       Region,
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("lab", "lab", ""),
	})
}

// startMoto runs moto_server on the lab endpoint address and waits until it accepts
// connections.
func startMoto(ctx context.Context, port int, logw io.Writer) (*proc, error) {
	cmd := nsCommand("", "moto_server", "-H", EndpointIP, "-p", strconv.Itoa(port))
	p, err := startProc("moto", cmd, logw, logw, true)
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(EndpointIP, strconv.Itoa(port))
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return p, nil
		}
		if p.Exited() || time.Now().After(deadline) || ctx.Err() != nil {
			p.Kill()
			return nil, fmt.Errorf("wait for moto on %s: %w", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// seed creates the lab's VPC in moto: two subnets, the two NAT instances at their lab
// addresses, the client route table (default route to nat1) plus extra tables, and the
// Elastic IP at its lab address, associated with nat1.
func seed(ctx context.Context, c *ec2.Client, extraTables int) (World, error) {
	w := World{Instances: map[string]Instance{}}
	var err error
	if w.VPCID, err = createVPC(ctx, c); err != nil {
		return w, err
	}
	subnet := func(cidr string) (string, error) { return createSubnet(ctx, c, w.VPCID, cidr) }
	// On the wire the lab has one /24; in moto the NATs and the client sit in their own
	// subnets inside it, as a public and a private subnet would.
	if w.PublicSubnet, err = subnet("198.18.1.0/26"); err != nil {
		return w, err
	}
	if w.ClientSubnet, err = subnet("198.18.1.64/26"); err != nil {
		return w, err
	}
	for _, h := range []string{Nat1, Nat2} {
		inst, err := runNAT(ctx, c, w.PublicSubnet, h, natIP(h))
		if err != nil {
			return w, err
		}
		w.Instances[h] = inst
	}
	table := func(name string, subnet string) (string, error) {
		rt, err := c.CreateRouteTable(ctx, &ec2.CreateRouteTableInput{VpcId: aws.String(w.VPCID),
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeRouteTable,
				Tags: []ec2types.Tag{{Key: aws.String("Name"), Value: aws.String(name)}}}}})
		if err != nil {
			return "", fmt.Errorf("create route table %s: %w", name, err)
		}
		id := *rt.RouteTable.RouteTableId
		if _, err := c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &id, DestinationCidrBlock: aws.String("0.0.0.0/0"),
			InstanceId: aws.String(w.Instances[Nat1].ID)}); err != nil {
			return "", fmt.Errorf("create default route in %s: %w", id, err)
		}
		if subnet != "" {
			if _, err := c.AssociateRouteTable(ctx, &ec2.AssociateRouteTableInput{RouteTableId: &id, SubnetId: &subnet}); err != nil {
				return "", fmt.Errorf("associate %s with %s: %w", id, subnet, err)
			}
		}
		return id, nil
	}
	if w.ClientTable, err = table("lab-client", w.ClientSubnet); err != nil {
		return w, err
	}
	for i := 0; i < extraTables; i++ {
		id, err := table(fmt.Sprintf("lab-extra-%d", i+1), "")
		if err != nil {
			return w, err
		}
		w.ExtraTables = append(w.ExtraTables, id)
	}
	eip, err := c.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc, Address: aws.String(ElasticIP)})
	if err != nil {
		// Older moto ignores or rejects a chosen address; the stand-in then maps whatever
		// address moto picked to the lab's public address.
		eip, err = c.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc})
		if err != nil {
			return w, fmt.Errorf("allocate address: %w", err)
		}
	}
	w.AllocationID, w.PublicIP = *eip.AllocationId, aws.ToString(eip.PublicIp)
	if _, err := c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: eip.AllocationId, InstanceId: aws.String(w.Instances[Nat1].ID)}); err != nil {
		return w, fmt.Errorf("associate %s with nat1: %w", w.AllocationID, err)
	}
	return w, nil
}

// createVPC creates the lab's VPC in moto.
func createVPC(ctx context.Context, c *ec2.Client) (string, error) {
	vpc, err := c.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String(VPCCIDR)})
	if err != nil {
		return "", fmt.Errorf("create vpc: %w", err)
	}
	return *vpc.Vpc.VpcId, nil
}

// createSubnet creates a subnet of vpc in the lab's zone.
func createSubnet(ctx context.Context, c *ec2.Client, vpc, cidr string) (string, error) {
	s, err := c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: aws.String(vpc), CidrBlock: aws.String(cidr), AvailabilityZone: aws.String(zone)})
	if err != nil {
		return "", fmt.Errorf("create subnet %s: %w", cidr, err)
	}
	return *s.Subnet.SubnetId, nil
}

// runNAT launches lab host's instance in subnet at address ip.
func runNAT(ctx context.Context, c *ec2.Client, subnet, host, ip string) (Instance, error) {
	out, err := c.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String("ami-12c6146b"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		InstanceType: ec2types.InstanceTypeT3Micro, SubnetId: aws.String(subnet),
		PrivateIpAddress: aws.String(ip),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance,
			Tags: []ec2types.Tag{{Key: aws.String("Name"), Value: aws.String("lab-" + host)}}}},
	})
	if err != nil {
		return Instance{}, fmt.Errorf("run instance %s: %w", host, err)
	}
	in := out.Instances[0]
	inst := Instance{Host: host, ID: *in.InstanceId, PrivateIP: aws.ToString(in.PrivateIpAddress), SubnetID: subnet}
	if len(in.NetworkInterfaces) > 0 {
		inst.ENI = aws.ToString(in.NetworkInterfaces[0].NetworkInterfaceId)
		inst.MAC = aws.ToString(in.NetworkInterfaces[0].MacAddress)
	}
	if inst.PrivateIP != ip || inst.ENI == "" {
		return inst, fmt.Errorf("run instance %s: moto gave %s on %q, want %s", host, inst.PrivateIP, inst.ENI, ip)
	}
	return inst, nil
}

// Snapshot is what moto says at one moment about the lab's failover state.
type Snapshot struct {
	At time.Time
	// EIPHolder is the instance id holding the Elastic IP, "" when unassociated.
	EIPHolder string
	// Routes maps each managed table to the instance id its default route targets; "" for
	// a missing or blackholed route.
	Routes map[string]string
}

// Owner returns the instance id that holds the EIP and every route, or "" when moto is
// not converged on one instance.
func (s Snapshot) Owner() string {
	o := s.EIPHolder
	for _, t := range s.Routes {
		if t != o {
			return ""
		}
	}
	return o
}

// readSnapshot reads the EIP and every managed route table from moto.
func readSnapshot(ctx context.Context, c *ec2.Client, w World) (Snapshot, error) {
	s := Snapshot{Routes: map[string]string{}}
	a, err := c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{w.AllocationID}})
	if err != nil {
		return s, fmt.Errorf("describe addresses: %w", err)
	}
	if len(a.Addresses) > 0 {
		s.EIPHolder = aws.ToString(a.Addresses[0].InstanceId)
	}
	rts, err := c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: w.Tables()})
	if err != nil {
		return s, fmt.Errorf("describe route tables: %w", err)
	}
	for _, rt := range rts.RouteTables {
		id := aws.ToString(rt.RouteTableId)
		s.Routes[id] = ""
		for _, r := range rt.Routes {
			if aws.ToString(r.DestinationCidrBlock) != "0.0.0.0/0" || r.State == ec2types.RouteStateBlackhole {
				continue
			}
			target := aws.ToString(r.InstanceId)
			if target == "" && r.NetworkInterfaceId != nil {
				target = w.instanceOfENI(*r.NetworkInterfaceId)
			}
			s.Routes[id] = target
		}
	}
	s.At = time.Now()
	return s, nil
}

// instanceOfENI maps a NAT's network interface id to its instance id.
func (w World) instanceOfENI(eni string) string {
	for _, in := range w.Instances {
		if in.ENI == eni {
			return in.ID
		}
	}
	return ""
}
