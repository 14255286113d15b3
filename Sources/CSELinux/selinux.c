/* libselinux through dlopen (see include/cselinux.h), as devmapper.c loads
 * libdevmapper: only the header is needed to build. */
#include "cselinux.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <selinux/label.h>
#include <selinux/selinux.h>

#define SE_FUNCTIONS(X) X(selabel_open) X(selabel_lookup) X(selabel_close) X(freecon)
#define DECLARE(name) __typeof__(name) *name;
static struct { SE_FUNCTIONS(DECLARE) } se;
static int se_loaded;
static pthread_once_t se_once = PTHREAD_ONCE_INIT;

static void load_once(void)
{
    /* RTLD_NODELETE: the module that loads it is never unloaded either. */
    void *library = dlopen("libselinux.so.1", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!library)
        return;
    /* A libselinux without one of these stays loaded (RTLD_NODELETE) and unused. */
#define LOOKUP(name) if (!(*(void **)&se.name = dlsym(library, #name))) return;
    SE_FUNCTIONS(LOOKUP)
    se_loaded = 1;
}

void *lcse_file_contexts_open(void)
{
    pthread_once(&se_once, load_once);
    if (!se_loaded) {
        errno = ELIBACC;
        return NULL;
    }
    errno = 0;
    void *handle = se.selabel_open(SELABEL_CTX_FILE, NULL, 0);
    if (!handle && errno == 0)
        errno = EINVAL;
    return handle;
}

int lcse_file_context(void *handle, const char *path, mode_t mode, char *out, size_t size)
{
    char *context = NULL;
    if (!handle) {
        errno = EINVAL;
        return -1;
    }
    if (se.selabel_lookup(handle, &context, path, (int)mode) != 0)
        return -1;
    size_t length = strlen(context);
    int result = 0;
    if (length >= size) {
        errno = ERANGE;
        result = -1;
    } else {
        memcpy(out, context, length + 1);
    }
    se.freecon(context);
    return result;
}

void lcse_file_contexts_close(void *handle)
{
    if (handle)
        se.selabel_close(handle);
}
