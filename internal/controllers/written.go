package controllers

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// WrittenVersions remembers the resourceVersion the apiserver gave each object this manager wrote, so that a
// reconcile can tell when the cache has not caught up with its own writes yet. A reconcile that acted on such an
// object would undo or repeat what it just wrote (the same status patched twice, a step started from an outdated
// status); instead it waits for the cache, whose update enqueues the object again. Only the manager's own writes
// are remembered, and a record is dropped once the cache holds that version or a later one, or the object is gone.
type WrittenVersions struct {
	scheme   *runtime.Scheme
	kinds    map[schema.GroupKind]bool
	mu       sync.Mutex
	versions map[writtenKey]string
}

type writtenKey struct {
	kind schema.GroupKind
	name types.NamespacedName
}

// cacheCatchUp is how soon a reconcile held back for the cache runs again, should the cache's own update not
// enqueue it (it normally does, sooner).
const cacheCatchUp = 200 * time.Millisecond

// NewWrittenVersions returns an empty record of the writes of the kinds of objs (objects of other kinds are not
// recorded: nothing would ever drop their records).
func NewWrittenVersions(scheme *runtime.Scheme, objs ...client.Object) *WrittenVersions {
	w := &WrittenVersions{scheme: scheme, kinds: map[schema.GroupKind]bool{}, versions: map[writtenKey]string{}}
	for _, o := range objs {
		if gvk, err := apiutil.GVKForObject(o, scheme); err == nil {
			w.kinds[gvk.GroupKind()] = true
		}
	}
	return w
}

// Client returns c with every write (create, update or patch, of an object or of its status) recorded; a dry
// run writes nothing and is not recorded.
func (w *WrittenVersions) Client(c client.Client) client.Client {
	return recordingClient{Client: c, w: w}
}

// Behind says whether obj, as read from the cache, is older than the manager's last write of it. A nil record
// holds nothing back.
func (w *WrittenVersions) Behind(obj client.Object) bool {
	if w == nil {
		return false
	}
	k, ok := w.keyOf(obj)
	if !ok {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	wrote, ok := w.versions[k]
	if !ok {
		return false
	}
	// Resource versions compare as numbers since Kubernetes 1.35; one that does not is never held back on.
	if cmp, err := resourceversion.CompareResourceVersion(obj.GetResourceVersion(), wrote); err == nil && cmp < 0 {
		return true
	}
	delete(w.versions, k)
	return false
}

// Forget drops the record of an object that is gone (only its kind, namespace and name are read).
func (w *WrittenVersions) Forget(obj client.Object) {
	if w == nil {
		return
	}
	if k, ok := w.keyOf(obj); ok {
		w.mu.Lock()
		delete(w.versions, k)
		w.mu.Unlock()
	}
}

func (w *WrittenVersions) record(obj client.Object, err error) {
	if err != nil || obj.GetResourceVersion() == "" {
		return
	}
	k, ok := w.keyOf(obj)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if prev, ok := w.versions[k]; ok {
		if cmp, err := resourceversion.CompareResourceVersion(prev, obj.GetResourceVersion()); err == nil && cmp > 0 {
			return // a later write's answer came first
		}
	}
	w.versions[k] = obj.GetResourceVersion()
}

func (w *WrittenVersions) keyOf(obj client.Object) (writtenKey, bool) {
	gvk, err := apiutil.GVKForObject(obj, w.scheme)
	if err != nil || !w.kinds[gvk.GroupKind()] {
		return writtenKey{}, false
	}
	return writtenKey{kind: gvk.GroupKind(), name: client.ObjectKeyFromObject(obj)}, true
}

// recordingClient is a client whose writes are recorded in w.
type recordingClient struct {
	client.Client
	w *WrittenVersions
}

func (c recordingClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	err := c.Client.Create(ctx, obj, opts...)
	if o := (&client.CreateOptions{}).ApplyOptions(opts); len(o.DryRun) == 0 {
		c.w.record(obj, err)
	}
	return err
}

func (c recordingClient) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	err := c.Client.Update(ctx, obj, opts...)
	if o := (&client.UpdateOptions{}).ApplyOptions(opts); len(o.DryRun) == 0 {
		c.w.record(obj, err)
	}
	return err
}

func (c recordingClient) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	err := c.Client.Patch(ctx, obj, patch, opts...)
	if o := (&client.PatchOptions{}).ApplyOptions(opts); len(o.DryRun) == 0 {
		c.w.record(obj, err)
	}
	return err
}

func (c recordingClient) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	err := c.Client.Delete(ctx, obj, opts...)
	if err == nil {
		c.w.Forget(obj)
	}
	return err
}

func (c recordingClient) Status() client.SubResourceWriter {
	return recordingSubResource{SubResourceClient: c.Client.SubResource("status"), w: c.w}
}

func (c recordingClient) SubResource(subResource string) client.SubResourceClient {
	return recordingSubResource{SubResourceClient: c.Client.SubResource(subResource), w: c.w}
}

// recordingSubResource is a subresource client whose writes are recorded in w.
type recordingSubResource struct {
	client.SubResourceClient
	w *WrittenVersions
}

func (c recordingSubResource) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	err := c.SubResourceClient.Update(ctx, obj, opts...)
	if o := (&client.SubResourceUpdateOptions{}).ApplyOptions(opts); len(o.DryRun) == 0 {
		c.w.record(obj, err)
	}
	return err
}

func (c recordingSubResource) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	err := c.SubResourceClient.Patch(ctx, obj, patch, opts...)
	if o := (&client.SubResourcePatchOptions{}).ApplyOptions(opts); len(o.DryRun) == 0 {
		c.w.record(obj, err)
	}
	return err
}
