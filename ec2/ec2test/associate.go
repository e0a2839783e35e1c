package ec2test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// EC2 associates an Elastic IP with one private IPv4 address of a network interface: the one
// AssociateAddress names (PrivateIpAddress), else the primary address of the interface (or
// of the instance's primary interface). Associating a second Elastic IP with a private
// address that has one disassociates the first ("If you associate an Elastic IP address with
// an instance that has an existing Elastic IP address, the existing address is disassociated
// from the instance, but remains allocated to your account"). moto does neither: it ignores
// PrivateIpAddress, reports every association on the interface's primary address, and lets
// any number of Elastic IPs share it. AssociateAsEC2 makes the proxy do what EC2 does.
//
// Where an association sits is kept in moto itself, as a tag on the Elastic IP
// (addressTag = "eni-…/10.0.0.5"), so that several proxies in front of one moto server (one
// per agent) agree; a tag whose interface is not the one moto reports is out of date and
// ignored.

// addressTag is the tag on an Elastic IP that holds the private address it is associated
// with through a proxy with AssociateAsEC2.
const addressTag = "ec2test:private-address"

// AddressTag is addressTag, for readers of moto that follow the associations themselves (the
// lab's stand-in for the internet gateway); its value is "eni-…/private-ip".
const AddressTag = addressTag

// AssociateAsEC2 turns on or off EC2's rule for AssociateAddress (see above): before
// forwarding a call, the proxy finds the private address it targets, answers
// InvalidParameterValue as EC2 does when the interface has no such address, and
// disassociates, in moto, any other Elastic IP associated with that private address; after
// moto accepts it, it records the address. DescribeAddresses answers then report each
// Elastic IP on the private address it was associated with. Displaced counts the Elastic
// IPs it disassociated.
func (p *Proxy) AssociateAsEC2(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.asEC2 = on
}

// Displaced returns how many Elastic IPs AssociateAsEC2 disassociated because another one
// was associated with their private address.
func (p *Proxy) Displaced() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.displaced
}

func (p *Proxy) associatesAsEC2() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.asEC2
}

// slot is one private address of one interface.
type slot struct{ eni, ip string }

func (s slot) String() string { return s.eni + "/" + s.ip }

// associateParams are the parameters of an AssociateAddress call.
type associateParams struct {
	allocID, publicIP, instanceID, eni, privateIP string
	dryRun                                        bool
}

func associateParamsOf(r *http.Request, body []byte) associateParams {
	v, err := url.ParseQuery(string(body))
	if err != nil || v.Get("Action") == "" {
		v = r.URL.Query()
	}
	return associateParams{allocID: v.Get("AllocationId"), publicIP: v.Get("PublicIp"), instanceID: v.Get("InstanceId"),
		eni: v.Get("NetworkInterfaceId"), privateIP: v.Get("PrivateIpAddress"), dryRun: strings.EqualFold(v.Get("DryRun"), "true")}
}

// regionOf reads the region from a SigV4 Authorization header; "" when there is none.
func regionOf(r *http.Request) string {
	auth := r.Header.Get("Authorization")
	i := strings.Index(auth, "Credential=")
	if i < 0 {
		return ""
	}
	parts := strings.Split(strings.SplitN(auth[i+len("Credential="):], ",", 2)[0], "/")
	if len(parts) < 3 {
		return ""
	}
	return parts[2]
}

// beforeAssociate applies EC2's rule to an AssociateAddress call before it is forwarded. It
// returns the private address the call targets, or the EC2 error code and message to answer
// instead.
func (p *Proxy) beforeAssociate(ctx context.Context, r *http.Request, a associateParams) (target slot, code, msg string, err error) {
	api := API(p.upstream, regionOf(r))
	var addrs []string
	switch {
	case a.instanceID != "":
		out, err := api.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{a.instanceID}})
		if err != nil {
			return slot{}, "", "", fmt.Errorf("describe instance %s: %w", a.instanceID, err)
		}
		for _, res := range out.Reservations {
			for _, in := range res.Instances {
				for _, ni := range in.NetworkInterfaces {
					if ni.Attachment != nil && aws.ToInt32(ni.Attachment.DeviceIndex) == 0 {
						target = slot{eni: aws.ToString(ni.NetworkInterfaceId), ip: aws.ToString(ni.PrivateIpAddress)}
						for _, ip := range ni.PrivateIpAddresses {
							addrs = append(addrs, aws.ToString(ip.PrivateIpAddress))
						}
					}
				}
			}
		}
	case a.eni != "":
		out, err := api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{a.eni}})
		if err != nil {
			return slot{}, "", "", fmt.Errorf("describe network interface %s: %w", a.eni, err)
		}
		for _, ni := range out.NetworkInterfaces {
			target = slot{eni: aws.ToString(ni.NetworkInterfaceId), ip: aws.ToString(ni.PrivateIpAddress)}
			for _, ip := range ni.PrivateIpAddresses {
				addrs = append(addrs, aws.ToString(ip.PrivateIpAddress))
			}
		}
	}
	if target.eni == "" {
		return slot{}, "", "", nil // moto answers for an unknown target
	}
	if a.privateIP != "" {
		if !slices.Contains(addrs, a.privateIP) {
			return slot{}, "InvalidParameterValue", fmt.Sprintf("The private IP address %s is not assigned to network interface %s.", a.privateIP, target.eni), nil
		}
		target.ip = a.privateIP
	}
	if a.dryRun {
		return target, "", "", nil
	}
	out, err := api.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{})
	if err != nil {
		return slot{}, "", "", fmt.Errorf("describe addresses: %w", err)
	}
	for _, e := range out.Addresses {
		if aws.ToString(e.AssociationId) == "" || (a.allocID != "" && aws.ToString(e.AllocationId) == a.allocID) ||
			(a.publicIP != "" && aws.ToString(e.PublicIp) == a.publicIP) {
			continue
		}
		if slotOf(e) != target {
			continue
		}
		if _, err := api.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: e.AssociationId}); err != nil {
			return slot{}, "", "", fmt.Errorf("disassociate %s from %s: %w", aws.ToString(e.AllocationId), target, err)
		}
		p.mu.Lock()
		p.displaced++
		p.mu.Unlock()
	}
	return target, "", "", nil
}

// afterAssociate records where the call put the Elastic IP.
func (p *Proxy) afterAssociate(ctx context.Context, r *http.Request, a associateParams, target slot) error {
	api := API(p.upstream, regionOf(r))
	alloc := a.allocID
	if alloc == "" {
		out, err := api.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{PublicIps: []string{a.publicIP}})
		if err != nil || len(out.Addresses) == 0 {
			return fmt.Errorf("find elastic ip %s: %v", a.publicIP, err)
		}
		alloc = aws.ToString(out.Addresses[0].AllocationId)
	}
	_, err := api.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{alloc},
		Tags: []types.Tag{{Key: aws.String(addressTag), Value: aws.String(target.String())}}})
	if err != nil {
		return fmt.Errorf("record the private address of %s: %w", alloc, err)
	}
	return nil
}

// slotOf is where an Elastic IP as moto reports it is associated: the tagged address when the
// tag names the interface moto reports, else moto's own (the interface's primary address).
func slotOf(e types.Address) slot {
	s := slot{eni: aws.ToString(e.NetworkInterfaceId), ip: aws.ToString(e.PrivateIpAddress)}
	for _, t := range e.Tags {
		if aws.ToString(t.Key) != addressTag {
			continue
		}
		if eni, ip, ok := strings.Cut(aws.ToString(t.Value), "/"); ok && eni == s.eni {
			s.ip = ip
		}
	}
	return s
}

var (
	tagRE     = regexp.MustCompile(`<key>` + regexp.QuoteMeta(addressTag) + `</key>\s*<value>([^<]*)</value>`)
	eniRE     = regexp.MustCompile(`<networkInterfaceId>([^<]*)</networkInterfaceId>`)
	privateRE = regexp.MustCompile(`<privateIpAddress>[^<]*</privateIpAddress>`)
)

// rewriteAddresses makes a DescribeAddresses answer report each Elastic IP on the private
// address its tag records (see slotOf).
func rewriteAddresses(body []byte) []byte {
	s := string(body)
	var out strings.Builder
	for {
		start, end := nextItem(s)
		if start < 0 {
			out.WriteString(s)
			return []byte(out.String())
		}
		out.WriteString(s[:start])
		out.WriteString(rewriteAddress(s[start:end]))
		s = s[end:]
	}
}

// nextItem finds the first top-level <item>…</item> of the addresses set in s.
func nextItem(s string) (start, end int) {
	start = strings.Index(s, "<item>")
	if start < 0 {
		return -1, -1
	}
	depth := 0
	for i := start; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "<item>"):
			depth++
			i += len("<item>")
		case strings.HasPrefix(s[i:], "</item>"):
			depth--
			i += len("</item>")
			if depth == 0 {
				return start, i
			}
		default:
			i++
		}
	}
	return -1, -1
}

func rewriteAddress(item string) string {
	tag := tagRE.FindStringSubmatch(item)
	eni := eniRE.FindStringSubmatch(item)
	if tag == nil || eni == nil {
		return item
	}
	tagENI, ip, ok := strings.Cut(tag[1], "/")
	if !ok || tagENI != eni[1] {
		return item
	}
	return privateRE.ReplaceAllLiteralString(item, "<privateIpAddress>"+ip+"</privateIpAddress>")
}
