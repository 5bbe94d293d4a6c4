// The self-check of the multi-node test bed (tests/mpi/netns.sh, `make test-netns`), needing none
// of strata's code: the ranks pass a token around a ring for a few laps, then a 4 MiB block (so
// the TCP transport's large-message path is used too, as a fine level's tile exchange uses it),
// and each rank reports the host name and IPv4 address it sees. Rank 0 checks the token's count,
// the block's checksum and, with --distinct, that every rank stood at a different address, i.e.
// that the traffic crossed between namespaces. Prints "ring: ok ..." and exits 0, or says what
// failed and exits 1.
//
//   mpirun -np R ring [--distinct]
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <mpi.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { LAPS = 3, BLOCK = 1 << 20, ADDR_LEN = 64 };

// Writes the first non-loopback IPv4 address of this process's network namespace into out
// ("none" when it has none).
static void own_address(char *out, size_t n)
{
    struct ifaddrs *all, *a;
    snprintf(out, n, "none");
    if (getifaddrs(&all) != 0) return;
    for (a = all; a; a = a->ifa_next) {
        if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET) continue;
        struct in_addr in = ((struct sockaddr_in *)a->ifa_addr)->sin_addr;
        if ((ntohl(in.s_addr) >> 24) == 127) continue;
        inet_ntop(AF_INET, &in, out, (socklen_t)n);
        break;
    }
    freeifaddrs(all);
}

// Passes a counter around the ring LAPS times, each rank adding one; returns the count rank 0
// holds at the end (LAPS * size when every hop arrived).
static int token_laps(int rank, int size)
{
    int token = 0, next = (rank + 1) % size, prev = (rank + size - 1) % size;
    for (int lap = 0; lap < LAPS; lap++) {
        if (rank == 0) {
            token++;
            if (size > 1) {
                MPI_Send(&token, 1, MPI_INT, next, 0, MPI_COMM_WORLD);
                MPI_Recv(&token, 1, MPI_INT, prev, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            }
        } else {
            MPI_Recv(&token, 1, MPI_INT, prev, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            token++;
            MPI_Send(&token, 1, MPI_INT, next, 0, MPI_COMM_WORLD);
        }
    }
    return token;
}

// Sends a 4 MiB block of known words once around the ring; returns 1 when the block that comes
// back to rank 0 is intact (every rank checks it on the way and passes it on unchanged).
static int block_ring(int rank, int size)
{
    uint32_t *b = malloc(BLOCK * sizeof *b);
    int ok = 1, next = (rank + 1) % size, prev = (rank + size - 1) % size;
    if (!b) MPI_Abort(MPI_COMM_WORLD, 1);
    if (rank == 0)
        for (uint32_t i = 0; i < BLOCK; i++)
            b[i] = i * 2654435761u;
    if (size > 1) {
        if (rank == 0) MPI_Send(b, BLOCK, MPI_UINT32_T, next, 1, MPI_COMM_WORLD);
        MPI_Recv(b, BLOCK, MPI_UINT32_T, prev, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (rank != 0) MPI_Send(b, BLOCK, MPI_UINT32_T, next, 1, MPI_COMM_WORLD);
    }
    for (uint32_t i = 0; i < BLOCK; i++)
        ok &= b[i] == i * 2654435761u;
    free(b);
    return ok;
}

// Rank 0: prints every rank's host and address, counts the distinct addresses, and judges.
static int judge(int size, const char *all, int token, int block_ok, int distinct)
{
    int n_distinct = 0;
    for (int r = 0; r < size; r++) {
        const char *a = all + (size_t)r * 2 * ADDR_LEN;
        int seen = 0;
        printf("ring: rank %d host %s address %s\n", r, a + ADDR_LEN, a);
        for (int q = 0; q < r; q++)
            seen |= !strcmp(a, all + (size_t)q * 2 * ADDR_LEN);
        n_distinct += !seen;
    }
    int ok = token == LAPS * size && block_ok && (!distinct || n_distinct == size);
    printf("ring: %s: %d ranks, token %d after %d laps (want %d), 4 MiB block %s, "
           "%d distinct addresses%s\n",
           ok ? "ok" : "FAILED", size, token, LAPS, LAPS * size, block_ok ? "intact" : "CORRUPT",
           n_distinct, distinct ? " (want one per rank)" : "");
    return ok;
}

int main(int argc, char **argv)
{
    int rank, size, distinct = argc > 1 && !strcmp(argv[1], "--distinct");
    char mine[2 * ADDR_LEN] = {0};
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    own_address(mine, ADDR_LEN);
    int name_len;
    char name[MPI_MAX_PROCESSOR_NAME];
    MPI_Get_processor_name(name, &name_len);
    snprintf(mine + ADDR_LEN, ADDR_LEN, "%.*s", ADDR_LEN - 1, name);

    int token = token_laps(rank, size);
    int block_ok = block_ring(rank, size), all_ok;
    MPI_Reduce(&block_ok, &all_ok, 1, MPI_INT, MPI_LAND, 0, MPI_COMM_WORLD);
    char *all = rank == 0 ? malloc((size_t)size * sizeof mine) : NULL;
    if (rank == 0 && !all) MPI_Abort(MPI_COMM_WORLD, 1);
    MPI_Gather(mine, sizeof mine, MPI_CHAR, all, sizeof mine, MPI_CHAR, 0, MPI_COMM_WORLD);
    int ok = rank != 0 || judge(size, all, token, all_ok, distinct);
    free(all);
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Finalize();
    return ok ? 0 : 1;
}
