package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/host"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/internal/tasks"
)

// A rebuilt host presents a new key. CAPR never trusts it silently: the HostKeyMismatch message names the pinned
// and presented fingerprints and the command that accepts the presented key once (the accept-host-key annotation,
// whose value is its fingerprint). CAPR then reads the key the host presents, without logging in; only a key whose
// fingerprint equals the annotation's value replaces the pinned key(s), and the annotation is consumed.

// hostKeyFile is where a host keeps its public key of a type, for the person checking a fingerprint on the host.
func hostKeyFile(keyType string) string {
	name := "ed25519"
	switch {
	case keyType == "ssh-rsa":
		name = "rsa"
	case strings.HasPrefix(keyType, "ecdsa-"):
		name = "ecdsa"
	}
	return "/etc/ssh/ssh_host_" + name + "_key.pub"
}

// mismatchMessage explains a host key mismatch on an object (resource is what kubectl calls its kind) and says how
// to accept the presented key, once, if the host was rebuilt.
func mismatchMessage(err error, resource, name, namespace string) string {
	var mm *sshrunner.HostKeyMismatchError
	if !errors.As(err, &mm) || mm.Presented == "" {
		return err.Error()
	}
	who, file := "host", hostKeyFile(sshrunner.KeyType(mm.Presented))
	if mm.Bastion {
		who = "bastion"
	}
	fp := sshrunner.Fingerprint(mm.Presented)
	return fmt.Sprintf("%s. Nothing was sent to the %s. If the %s was rebuilt, check the new key on it (ssh-keygen -lf %s must print %s), then accept that key once: "+
		"kubectl annotate %s %s -n %s %s=%s", err.Error(), who, who, file, fp, resource, name, namespace, infrav1.AcceptHostKeyAnnotation, fp)
}

// presentedKey reads the key a host presents, without logging in: the target host's, or the bastion's when the
// bastion's pinned key no longer matches (its key is replaced first).
func presentedKey(ctx context.Context, hosts HostService, cfg sshrunner.Config) (host.ScanResult, error) {
	res, err := hosts.Scan(ctx, cfg)
	if res.Bastion && errors.Is(err, sshrunner.ErrHostKeyMismatch) && cfg.Bastion != nil {
		b := *cfg.Bastion
		b.HostKeys = nil
		cfg.Bastion = &b
		res, err = hosts.Scan(ctx, cfg)
	}
	return res, err
}

// pinnedFingerprints returns the fingerprints of the keys h pins for the host, or for its bastion.
func pinnedFingerprints(h *infrav1.RemoteHost, bastion bool) []string {
	keys := h.HostKeys
	if bastion {
		if h.Bastion == nil {
			return nil
		}
		keys = h.Bastion.HostKeys
	}
	var out []string
	for _, k := range keys {
		if fp := sshrunner.Fingerprint(k); fp != "" {
			out = append(out, fp)
		}
	}
	return out
}

// replaceKey makes the accepted key the only one h pins for the host (or its bastion).
func replaceKey(h *infrav1.RemoteHost, res host.ScanResult) {
	if res.Bastion {
		if h.Bastion != nil {
			h.Bastion.HostKeys = []string{res.Key}
		}
		return
	}
	h.HostKeys = []string{res.Key}
}

// acceptedBy is who set the accept-host-key annotation, as CAPR's webhook recorded it.
func acceptedBy(obj client.Object) string {
	if by := obj.GetAnnotations()[infrav1.AcceptHostKeyByAnnotation]; by != "" {
		return by
	}
	return "unknown (no " + infrav1.AcceptHostKeyByAnnotation + " annotation)"
}

// consumeAccept removes the accept-host-key annotations from obj.
func consumeAccept(obj client.Object) {
	a := obj.GetAnnotations()
	delete(a, infrav1.AcceptHostKeyAnnotation)
	delete(a, infrav1.AcceptHostKeyByAnnotation)
	obj.SetAnnotations(a)
}

// notAcceptedMessage says that the annotation names another key than the one presented, and that nothing changed.
func notAcceptedMessage(want string, res host.ScanResult, where string) string {
	who := "host"
	if res.Bastion {
		who = "bastion"
	}
	return fmt.Sprintf("The %s annotation names %s, but the %s %s presents %s %s: nothing changed, the pinned key(s) are still required. "+
		"Check the key on the %s, then set the annotation to its fingerprint (kubectl annotate --overwrite), or remove it",
		infrav1.AcceptHostKeyAnnotation, want, who, where, sshrunner.KeyType(res.Key), sshrunner.Fingerprint(res.Key), who)
}

// startAccept reads the key rm's host presents, to compare it with the accept-host-key annotation, when the
// bootstrap stopped on a host key mismatch and the annotation holds a value not compared yet. It says whether it
// started.
func (r *RemoteMachineReconciler) startAccept(ctx context.Context, rm *infrav1.RemoteMachine) (bool, error) {
	key := string(rm.UID)
	want, ok := rm.Annotations[infrav1.AcceptHostKeyAnnotation]
	c := conditionOf(rm.Status.Conditions, infrav1.BootstrapSucceededCondition)
	mismatch := c != nil && c.Reason == infrav1.HostKeyMismatchReason
	if !rm.DeletionTimestamp.IsZero() {
		// Being deleted: the cleanup stopped on the mismatch.
		_, mismatch = r.cleanupMismatch.Load(key)
	}
	if !ok || !mismatch {
		return false, nil
	}
	if tried, ok := r.acceptTried.Load(key); ok && tried.(string) == want {
		return false, nil // this value was compared already: it waits for another value, or another spec
	}
	if v, ok := r.retries.Load(key); ok && time.Now().Before(v.(retryGate).notBefore) {
		return false, nil // the host could not be read: tried again after the backoff
	}
	cfg, _, err := hostConfig(ctx, r.APIReader, rm.Namespace, &rm.Spec.RemoteHost, ctrl.LoggerFrom(ctx))
	if err != nil {
		if errors.Is(err, ErrMissingSecret) {
			setBootstrapCondition(rm, metav1.ConditionFalse, infrav1.WaitingForSecretReason, err.Error())
			return true, nil
		}
		return false, err
	}
	hosts := r.Hosts
	r.Tasks.Start(ctx, key, tasks.Accept, rm, func(ctx context.Context) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		res, err := presentedKey(ctx, hosts, cfg)
		countSSHError(err)
		return res, err
	})
	return true, nil
}

// acceptFinished compares the key the host presents with the accept-host-key annotation: the same key replaces the
// pinned one(s), on the pool entry first, and the annotation is consumed; another key changes nothing.
func (r *RemoteMachineReconciler) acceptFinished(ctx context.Context, rm *infrav1.RemoteMachine, res tasks.Result) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	key := string(rm.UID)
	want, ok := rm.Annotations[infrav1.AcceptHostKeyAnnotation]
	if !ok {
		return ctrl.Result{}, nil // removed meanwhile
	}
	c := conditionOf(rm.Status.Conditions, infrav1.BootstrapSucceededCondition)
	if res.Err != nil {
		msg := fmt.Sprintf("Could not read the key %s presents to compare it with the %s annotation: %s", hostPort(rm), infrav1.AcceptHostKeyAnnotation, sshrunner.Truncate(res.Err.Error(), 800))
		r.Recorder.Eventf(rm, nil, corev1.EventTypeWarning, infrav1.HostKeyNotAcceptedReason, "AcceptHostKey", msg)
		return ctrl.Result{RequeueAfter: r.backoff(key)}, nil
	}
	out := res.Value.(host.ScanResult)
	got := sshrunner.Fingerprint(out.Key)
	if got != want {
		r.acceptTried.Store(key, want)
		msg := notAcceptedMessage(want, out, hostPort(rm))
		log.Info("The accept-host-key annotation names another key; nothing changed", "annotation", want, "presented", got)
		r.Recorder.Eventf(rm, nil, corev1.EventTypeWarning, infrav1.HostKeyNotAcceptedReason, "AcceptHostKey", msg)
		if c != nil && rm.DeletionTimestamp.IsZero() {
			base, _, _ := strings.Cut(c.Message, " The "+infrav1.AcceptHostKeyAnnotation+" annotation names")
			setBootstrapCondition(rm, metav1.ConditionFalse, c.Reason, sshrunner.Truncate(base+" "+msg, 4096))
		}
		return ctrl.Result{}, nil
	}
	r.acceptTried.Delete(key)
	previous := pinnedFingerprints(&rm.Spec.RemoteHost, out.Bastion)
	by := acceptedBy(rm)
	// The entry first: if that fails, nothing is replaced, and the next attempt reads the key again.
	if err := r.replacePoolEntryKey(ctx, rm, out, by); err != nil {
		return ctrl.Result{}, err
	}
	replaceKey(&rm.Spec.RemoteHost, out)
	consumeAccept(rm)
	rm.Status.LastHostKeyReplacement = &infrav1.HostKeyReplacement{Previous: previous, Current: got, Bastion: out.Bastion, By: by, At: metav1.Now()}
	r.retries.Delete(key)
	who := "host"
	if out.Bastion {
		who = "bastion"
	}
	msg := fmt.Sprintf("Replaced the pinned %s key(s) %s of %s with %s %s, accepted by %s (%s annotation)",
		who, strings.Join(previous, ", "), hostPort(rm), sshrunner.KeyType(out.Key), got, by, infrav1.AcceptHostKeyAnnotation)
	if rm.DeletionTimestamp.IsZero() {
		setBootstrapCondition(rm, metav1.ConditionFalse, infrav1.BootstrappingReason, msg+"; connecting again")
	} else {
		r.cleanupMismatch.Delete(key)
	}
	log.Info("Replaced a pinned host key accepted by a person", "bastion", out.Bastion, "previous", previous, "current", got, "by", by)
	r.Recorder.Eventf(rm, nil, corev1.EventTypeNormal, infrav1.HostKeyReplacedReason, "AcceptHostKey", msg)
	return ctrl.Result{RequeueAfter: time.Second}, nil
}

// replacePoolEntryKey replaces the accepted key on the pool entry rm holds, so every later claim verifies it.
func (r *RemoteMachineReconciler) replacePoolEntryKey(ctx context.Context, rm *infrav1.RemoteMachine, res host.ScanResult, by string) error {
	replaced, err := r.patchHeldEntry(ctx, rm, func(h *infrav1.RemoteHost) { replaceKey(h, res) })
	if err != nil {
		return err
	}
	if replaced != nil {
		r.Recorder.Eventf(replaced, rm, corev1.EventTypeNormal, infrav1.HostKeyReplacedReason, "AcceptHostKey",
			"Replaced the pinned key with %s, accepted by %s on RemoteMachine %s", sshrunner.Fingerprint(res.Key), by, rm.Name)
	}
	return nil
}

// pinnedEqual says whether two entries pin the same keys for the host and the bastion.
func pinnedEqual(a, b *infrav1.PooledRemoteMachine) bool {
	ha, hb := a.Spec.Machine.RemoteHost, b.Spec.Machine.RemoteHost
	if strings.Join(ha.HostKeys, "\n") != strings.Join(hb.HostKeys, "\n") {
		return false
	}
	if ha.Bastion == nil || hb.Bastion == nil {
		return ha.Bastion == hb.Bastion
	}
	return strings.Join(ha.Bastion.HostKeys, "\n") == strings.Join(hb.Bastion.HostKeys, "\n")
}

// conditionOf returns the condition of that type, or nil.
func conditionOf(list []metav1.Condition, t string) *metav1.Condition {
	for i := range list {
		if list[i].Type == t {
			return &list[i]
		}
	}
	return nil
}

// startAcceptKey, for a pool entry no RemoteMachine holds whose accept-host-key annotation holds a value not
// compared yet, reads the key its host presents in a task ("accept-entry"), off the reconcile workers;
// acceptKeyFinished compares it. It says whether it started.
func (r *PooledRemoteMachineReconciler) startAcceptKey(ctx context.Context, entry *infrav1.PooledRemoteMachine) bool {
	want, ok := entry.Annotations[infrav1.AcceptHostKeyAnnotation]
	if !ok || entry.Spec.ClaimRef != nil || r.Hosts == nil || r.Tasks == nil {
		return false
	}
	if tried, ok := r.acceptTried.Load(entry.UID); ok && tried.(string) == want {
		return false
	}
	cfg, _, err := hostConfig(ctx, r.APIReader, entry.Namespace, &entry.Spec.Machine.RemoteHost, ctrl.LoggerFrom(ctx))
	if err != nil {
		r.acceptKeyFailed(entry, err)
		return false
	}
	hosts := r.Hosts
	return r.Tasks.Start(ctx, string(entry.UID), tasks.AcceptEntry, entry, func(ctx context.Context) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		res, err := presentedKey(ctx, hosts, cfg)
		countSSHError(err)
		return res, err
	})
}

// acceptKeyFailed reports that the key a host presents could not be read.
func (r *PooledRemoteMachineReconciler) acceptKeyFailed(entry *infrav1.PooledRemoteMachine, err error) {
	r.Recorder.Eventf(entry, nil, corev1.EventTypeWarning, infrav1.HostKeyNotAcceptedReason, "AcceptHostKey",
		"Could not read the key %s presents to compare it with the %s annotation: %s", hostPortOf(&entry.Spec.Machine.RemoteHost),
		infrav1.AcceptHostKeyAnnotation, sshrunner.Truncate(err.Error(), 800))
}

// acceptKeyFinished compares the key the entry's host presents (the result of startAcceptKey's task) with the
// accept-host-key annotation: the same key replaces the entry's pinned key(s) (stored before the next login) and
// the annotation is consumed; another key changes nothing. A value is compared once. It says whether it replaced
// the key (and stored the entry, spec then status).
func (r *PooledRemoteMachineReconciler) acceptKeyFinished(ctx context.Context, entry *infrav1.PooledRemoteMachine, task tasks.Result) bool {
	want, ok := entry.Annotations[infrav1.AcceptHostKeyAnnotation]
	if !ok || entry.Spec.ClaimRef != nil {
		return false // removed, or claimed, meanwhile
	}
	if task.Err != nil {
		r.acceptKeyFailed(entry, task.Err)
		return false
	}
	res := task.Value.(host.ScanResult)
	log := ctrl.LoggerFrom(ctx)
	where := hostPortOf(&entry.Spec.Machine.RemoteHost)
	got := sshrunner.Fingerprint(res.Key)
	if got != want {
		r.acceptTried.Store(entry.UID, want)
		msg := notAcceptedMessage(want, res, where)
		log.Info("The accept-host-key annotation names another key; nothing changed", "annotation", want, "presented", got)
		r.Recorder.Eventf(entry, nil, corev1.EventTypeWarning, infrav1.HostKeyNotAcceptedReason, "AcceptHostKey", msg)
		return false
	}
	previous := pinnedFingerprints(&entry.Spec.Machine.RemoteHost, res.Bastion)
	by := acceptedBy(entry)
	updated := entry.DeepCopy()
	replaceKey(&updated.Spec.Machine.RemoteHost, res)
	consumeAccept(updated)
	// Stored before the next login (the probe's).
	if err := r.Client.Patch(ctx, updated, client.MergeFromWithOptions(entry, client.MergeFromWithOptimisticLock{})); err != nil {
		log.Info("Could not store the accepted host key; trying again", "error", err.Error())
		return false
	}
	r.acceptTried.Delete(entry.UID)
	r.lastProbe.Delete(entry.UID) // probe again now, with the new key
	orig := updated.DeepCopy()
	updated.Status.LastHostKeyReplacement = &infrav1.HostKeyReplacement{Previous: previous, Current: got, Bastion: res.Bastion, By: by, At: metav1.Now()}
	if err := r.Client.Status().Patch(ctx, updated, client.MergeFrom(orig)); err != nil {
		log.Info("Could not record the host key replacement in status", "error", err.Error())
	}
	who := "host"
	if res.Bastion {
		who = "bastion"
	}
	msg := fmt.Sprintf("Replaced the pinned %s key(s) %s of %s with %s %s, accepted by %s (%s annotation)",
		who, strings.Join(previous, ", "), where, sshrunner.KeyType(res.Key), got, by, infrav1.AcceptHostKeyAnnotation)
	log.Info("Replaced a pinned host key accepted by a person", "bastion", res.Bastion, "previous", previous, "current", got, "by", by)
	r.Recorder.Eventf(entry, nil, corev1.EventTypeNormal, infrav1.HostKeyReplacedReason, "AcceptHostKey", msg)
	return true
}
