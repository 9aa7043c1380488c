package controllers

import (
	"errors"
	"fmt"
	"testing"

	. "github.com/onsi/gomega"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
)

// TestFailureReasonsAreTheSameEverywhere: the pool entry's probe named SSH failures with sshrunner's own words
// (Unreachable, Timeout, CommandFailed, Error) while the RemoteMachine said HostUnreachable for the same host, so
// an alert or a runbook keyed on one missed the other. Both now take their reason from one mapping onto the API's
// constants.
func TestFailureReasonsAreTheSameEverywhere(t *testing.T) {
	g := NewWithT(t)
	for _, f := range failures {
		reason, terminal := failureReason(fmt.Errorf("wrapped: %w", f.err))
		g.Expect(reason).To(Equal(f.reason), "%v", f.err)
		g.Expect(terminal).To(Equal(f.terminal))
	}
	for _, err := range []error{sshrunner.ErrTimeout, sshrunner.ErrUnreachable, sshrunner.ErrCommandFailed, errors.New("apiserver unavailable")} {
		reason, terminal := failureReason(err)
		g.Expect(reason).To(Equal(infrav1.HostUnreachableReason), "%v", err)
		g.Expect(terminal).To(BeFalse())
	}
}
