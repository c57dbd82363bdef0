/* Read-only file access shared by the file-format readers (safetensors, GGUF). */
#include "common/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

rf_status rf_file_open_ro(const char *path, int *fd, rf_err *err)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd >= 0) return RF_OK;
    if (errno == ENOENT) return rf_err_set(err, RF_ERR_NOT_FOUND, "%s: no such file", path);
    return rf_err_errno(err, errno, "cannot open %s", path);
}

rf_status rf_file_map(const char *path, void **map, uint64_t *size, rf_err *err)
{
    *map = NULL;
    *size = 0;
    int fd;
    rf_status rc = rf_file_open_ro(path, &fd, err);
    if (rc != RF_OK) return rc;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        rc = rf_err_errno(err, errno, "cannot stat %s", path);
    } else if (!S_ISREG(sb.st_mode)) {
        rc = rf_err_set(err, RF_ERR_IO, "%s: not a regular file", path);
    } else if ((uint64_t)sb.st_size > SIZE_MAX) {
        rc = rf_err_set(err, RF_ERR_IO, "%s: too large to map", path);
    } else if (sb.st_size > 0) { /* an empty file maps nothing: its reader reports it as too short */
        void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            rc = rf_err_errno(err, errno, "cannot mmap %s", path);
        } else {
            *map = m;
            *size = (uint64_t)sb.st_size;
        }
    }
    close(fd);
    return rc;
}

void rf_file_unmap(void *map, uint64_t size)
{
    if (map) munmap(map, (size_t)size);
}
