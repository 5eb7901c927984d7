/* A stand-in for Google's Edge TPU runtime libedgetpu.so.1, built by the tests with the C compiler.
 *
 * It exports what respect-pass uses of the real library, with the real signatures:
 *   - the Edge TPU C API of libedgetpu's tflite/public/edgetpu_c.h: edgetpu_version,
 *     edgetpu_list_devices, edgetpu_free_devices (left out when built with -DFAKE_NO_C_API);
 *   - the TFLite external-delegate entry points (tensorflow/lite/delegates/external, implemented by
 *     libedgetpu's tflite/edgetpu_delegate_for_custom_op_tflite_plugin.cc) that LiteRT's load_delegate
 *     calls: tflite_plugin_create_delegate, tflite_plugin_destroy_delegate.
 *
 * The delegate it makes claims no operator, so LiteRT runs the whole model on the CPU.
 * Environment:
 *   FAKE_EDGETPU_VERSION  the string edgetpu_version returns
 *   FAKE_EDGETPU_DEVICES  N (N USB accelerators) or a list of types ("usb,pci,usb"); default none
 *   FAKE_EDGETPU_MODE     ok (default); fail: create_delegate returns NULL;
 *                         crash: create_delegate raises SIGSEGV; refuse: the delegate's Prepare fails
 *                         (a model the runtime refuses); crash_prepare: Prepare raises SIGSEGV
 */
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

static const char *mode(void) {
  const char *m = getenv("FAKE_EDGETPU_MODE");
  return m ? m : "ok";
}

#ifndef FAKE_NO_C_API
enum edgetpu_device_type { EDGETPU_APEX_PCI = 0, EDGETPU_APEX_USB = 1 };

struct edgetpu_device {
  enum edgetpu_device_type type;
  const char *path;
};

EXPORT const char *edgetpu_version(void) {
  const char *v = getenv("FAKE_EDGETPU_VERSION");
  return v ? v : "BuildLabel(COMPILER=fake,DATE=redacted,TIME=redacted,CL_NUMBER=0), RuntimeVersion(14)";
}

/* Like the real one: one allocation holding the records, then their path strings; NULL when none. */
EXPORT struct edgetpu_device *edgetpu_list_devices(size_t *num_devices) {
  const char *spec = getenv("FAKE_EDGETPU_DEVICES");
  enum edgetpu_device_type types[64];
  size_t n = 0;
  if (spec && *spec >= '0' && *spec <= '9') {
    for (long k = strtol(spec, NULL, 10); k > 0 && n < 64; --k) types[n++] = EDGETPU_APEX_USB;
  } else if (spec) {
    for (const char *p = spec; *p && n < 64; p += strcspn(p, ",") + (p[strcspn(p, ",")] == ',')) {
      types[n++] = strncmp(p, "pci", 3) == 0 ? EDGETPU_APEX_PCI : EDGETPU_APEX_USB;
    }
  }
  *num_devices = n;
  if (n == 0) return NULL;
  size_t size = n * (sizeof(struct edgetpu_device) + 64);
  char *memory = calloc(1, size);
  struct edgetpu_device *devs = (struct edgetpu_device *)memory;
  char *paths = memory + n * sizeof(struct edgetpu_device);
  int usb = 0, pci = 0;
  for (size_t i = 0; i < n; ++i) {
    devs[i].type = types[i];
    if (types[i] == EDGETPU_APEX_USB)
      snprintf(paths, 64, "/sys/bus/usb/devices/%d-1", ++usb);
    else
      snprintf(paths, 64, "/dev/apex_%d", pci++);
    devs[i].path = paths;
    paths += strlen(paths) + 1;
  }
  return devs;
}

EXPORT void edgetpu_free_devices(struct edgetpu_device *dev) { free(dev); }
#endif

/* TfLiteDelegate as in tensorflow/lite/core/c/common.h; allocated larger than needed, zeroed. */
typedef struct FakeDelegate {
  void *data_;
  int (*Prepare)(void *context, struct FakeDelegate *delegate);
  void *CopyFromBufferHandle;
  void *CopyToBufferHandle;
  void *FreeBufferHandle;
  int64_t flags;
  void *opaque_delegate_builder;
} FakeDelegate;

static int prepare(void *context, FakeDelegate *delegate) {
  (void)context;
  (void)delegate;
  if (strcmp(mode(), "crash_prepare") == 0) raise(SIGSEGV);
  return strcmp(mode(), "refuse") == 0 ? 1 /* kTfLiteError */ : 0 /* kTfLiteOk */;
}

EXPORT void *tflite_plugin_create_delegate(char **keys, char **values, size_t num_options,
                                           void (*report_error)(const char *)) {
  (void)keys;
  (void)values;
  (void)num_options;
  if (strcmp(mode(), "crash") == 0) raise(SIGSEGV);
  if (strcmp(mode(), "fail") == 0) {
    (void)report_error; /* libedgetpu logs to stderr and returns NULL without calling it */
    fputs("fake libedgetpu: no Edge TPU device\n", stderr);
    return NULL;
  }
  FakeDelegate *d = calloc(1, 256);
  d->Prepare = prepare;
  return d;
}

EXPORT void tflite_plugin_destroy_delegate(void *delegate) { free(delegate); }
