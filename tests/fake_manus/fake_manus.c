/* A fake MANUS SDK for hardware-free tests: the CoreSdk_* calls the driver uses, with the
 * documented struct layouts, firing raw-skeleton callbacks for two gloves from a pthread.
 *
 * Build: gcc -shared -fPIC -O1 -DSDK_MAJOR=3 fake_manus.c -o libManusSDK-fake.so -lpthread
 * Environment:
 *   FAKE_MANUS_NODE_ORDER = chain (thumb..pinky, joints in order) | reversed (SDK-2-like: reversed, shuffled ids)
 *   FAKE_MANUS_RATE_HZ    = callback rate (default 120)
 *   FAKE_MANUS_CRASH_ONCE = path: the first time (file absent) segfault, creating the file, at callback
 *                           FAKE_MANUS_CRASH_FRAME (default 30)
 *   FAKE_MANUS_NO_HOSTS   = 1: no host is ever found
 * Node (chain c, joint j) of glove side s has position (0.01 c + 0.001 j, 0.0001 * frame, 0.1 s).
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct { float x, y, z; } ManusVec3;
typedef struct { float w, x, y, z; } ManusQuaternion;
typedef struct { ManusVec3 position; ManusQuaternion rotation; ManusVec3 scale; } ManusTransform;
typedef struct { uint32_t id; ManusTransform transform; } SkeletonNode;
typedef struct { uint64_t time; } ManusTimestamp;
typedef struct { uint32_t gloveId; uint32_t nodesCount; ManusTimestamp publishTime; } RawSkeletonInfo;
typedef struct { ManusTimestamp publishTime; uint32_t skeletonsCount; } SkeletonStreamInfo;
typedef struct { uint32_t nodeId; uint32_t parentId; int32_t chainType; int32_t side; int32_t fingerJointType; } NodeInfo;
typedef struct { char hostName[256]; char ipAddress[40]; uint8_t version[60]; } ManusHost;
typedef struct { int32_t view; int32_t up; int32_t handedness; float unitScale; } CoordinateSystemVUH;
typedef void (*RawSkeletonStreamCallback)(const SkeletonStreamInfo *);

#define NODES 25
static const uint32_t GLOVE_IDS[2] = {1001, 2002};
static const int32_t SIDES[2] = {1, 2}; /* left, right */
static NodeInfo infos[2][NODES];
static RawSkeletonStreamCallback callback = NULL;
static int coordinate_system_set = 0, initialized = 0, connected = 0;
static volatile int running = 0;
static pthread_t thread;
static uint64_t frame = 0;

static void build_topology(void) {
    int chains[NODES], joints[NODES], n = 0;
    chains[n] = 13; joints[n] = 0; n++;                       /* the hand root (wrist) */
    for (int c = 5; c <= 9; c++)
        for (int j = 1; j <= 5; j++) {
            if (c == 5 && j == 4) continue;                  /* the thumb has no distal */
            chains[n] = c; joints[n] = j; n++;
        }
    const char *order = getenv("FAKE_MANUS_NODE_ORDER");
    int reversed = order && strcmp(order, "reversed") == 0;
    for (int g = 0; g < 2; g++)
        for (int i = 0; i < NODES; i++) {
            int k = reversed ? NODES - 1 - i : i;
            NodeInfo *info = &infos[g][i];
            info->nodeId = reversed ? 100 + (uint32_t)(i * 7 % NODES) : (uint32_t)i;
            info->parentId = 0;
            info->chainType = chains[k];
            info->side = SIDES[g];
            info->fingerJointType = joints[k];
        }
}

static void *run(void *unused) {
    (void)unused;
    const char *rate_text = getenv("FAKE_MANUS_RATE_HZ");
    double rate = rate_text ? atof(rate_text) : 120.0;
    const char *crash_file = getenv("FAKE_MANUS_CRASH_ONCE");
    const char *crash_text = getenv("FAKE_MANUS_CRASH_FRAME");
    uint64_t crash_frame = crash_text ? (uint64_t)atoll(crash_text) : 30;
    struct timespec period = {0, (long)(1e9 / rate)};
    while (running) {
        nanosleep(&period, NULL);
        frame++;
        if (crash_file && frame == crash_frame && access(crash_file, F_OK) != 0) {
            FILE *f = fopen(crash_file, "w");
            if (f) fclose(f);
            volatile int *null = NULL;
            *null = 1;                                         /* segfault, like a bad SDK */
        }
        SkeletonStreamInfo info = {{frame * 8333333ull}, 2};
        if (callback) callback(&info);
    }
    return NULL;
}

int32_t CoreSdk_RegisterCallbackForRawSkeletonStream(RawSkeletonStreamCallback cb) { callback = cb; return 0; }
int32_t CoreSdk_InitializeCoordinateSystemWithVUH(CoordinateSystemVUH vuh, bool world) {
    (void)world;
    if (vuh.unitScale <= 0) return 2;
    coordinate_system_set = 1;
    return 0;
}
int32_t CoreSdk_LookForHosts(uint32_t wait, bool loopback) { (void)wait; (void)loopback; return initialized ? 0 : 10; }
int32_t CoreSdk_GetNumberOfAvailableHostsFound(uint32_t *count) {
    *count = getenv("FAKE_MANUS_NO_HOSTS") ? 0 : 1;
    return 0;
}
int32_t CoreSdk_GetAvailableHostsFound(ManusHost *hosts, uint32_t count) {
    if (count < 1) return 3;
    memset(&hosts[0], 0, sizeof(ManusHost));
    strcpy(hosts[0].hostName, "fake-dongle");
    return 0;
}
int32_t CoreSdk_ConnectToHost(ManusHost host) {
    if (!coordinate_system_set) return 16;                   /* NoCoordinateSystemSet */
    if (strcmp(host.hostName, "fake-dongle") != 0) return 13;
    connected = 1;
    running = 1;
    pthread_create(&thread, NULL, run, NULL);
    return 0;
}
int32_t CoreSdk_GetRawSkeletonInfo(uint32_t index, RawSkeletonInfo *info) {
    if (index > 1) return 13;
    info->gloveId = GLOVE_IDS[index];
    info->nodesCount = NODES;
    info->publishTime.time = frame * 8333333ull;
    return 0;
}
int32_t CoreSdk_GetRawSkeletonData(uint32_t index, SkeletonNode *nodes, uint32_t count) {
    if (index > 1 || count != NODES) return 3;
    for (uint32_t i = 0; i < NODES; i++) {
        NodeInfo *info = &infos[index][i];
        nodes[i].id = info->nodeId;
        nodes[i].transform.position.x = 0.01f * info->chainType + 0.001f * info->fingerJointType;
        nodes[i].transform.position.y = 0.0001f * (float)(frame % 1000);
        nodes[i].transform.position.z = 0.1f * info->side;
        nodes[i].transform.rotation.w = 1.0f;
    }
    return 0;
}
int32_t CoreSdk_GetRawSkeletonNodeCount(uint32_t glove, uint32_t *count) {
    if (glove != GLOVE_IDS[0] && glove != GLOVE_IDS[1]) return 13;
    *count = NODES;
    return 0;
}
int32_t CoreSdk_GetRawSkeletonNodeInfoArray(uint32_t glove, NodeInfo *out, uint32_t count) {
    int g = glove == GLOVE_IDS[0] ? 0 : glove == GLOVE_IDS[1] ? 1 : -1;
    if (g < 0) return 13;
    if (count != NODES) return 3;
    memcpy(out, infos[g], sizeof(infos[g]));
    return 0;
}
int32_t CoreSdk_ShutDown(void) {
    if (running) { running = 0; pthread_join(thread, NULL); }
    initialized = connected = coordinate_system_set = 0;
    callback = NULL;
    return 0;
}
#if SDK_MAJOR >= 3
int32_t CoreSdk_InitializeIntegrated(void) { build_topology(); initialized = 1; return 0; }
int32_t CoreSdk_InitializeCore(void) { build_topology(); initialized = 1; return 0; }
#else
int32_t CoreSdk_Initialize(int32_t session_type, bool remote) {
    (void)remote;
    if (session_type != 2) return 2;
    build_topology();
    initialized = 1;
    return 0;
}
#endif
