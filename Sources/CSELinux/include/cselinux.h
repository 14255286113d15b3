/* libselinux's file-context lookup, loaded with dlopen on first use: a
 * machine without SELinux never loads it (selinux.c). */
#ifndef LOGINCHROOT_CSELINUX_H
#define LOGINCHROOT_CSELINUX_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/xattr.h>  /* fgetxattr, fsetxattr: labels are xattrs */

/* The loaded policy's file contexts (selabel_open(SELABEL_CTX_FILE)), or
 * NULL with errno set (ELIBACC: libselinux could not be loaded). */
void *lcse_file_contexts_open(void);
/* The context the policy gives a new file of `mode` at `path`, copied into
 * `out`: 0; -1 with errno ENOENT when the policy gives none, another errno
 * on error, ERANGE when `size` is too small. */
int lcse_file_context(void *handle, const char *path, mode_t mode, char *out, size_t size);
void lcse_file_contexts_close(void *handle);

#endif
