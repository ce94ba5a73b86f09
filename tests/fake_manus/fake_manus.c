/* A fake MANUS SDK for hardware-free tests, built from the public MANUS Core SDK headers
 * (ManusSDK.h / ManusSDKTypes.h, as vendored in public SDK-client repositories) and the official
 * SDKClient's connection path, not from our driver:
 *   - SessionType: Unknown 0, UnityPlugin 1, UnrealPlugin 2, CoreSDK 3; 2.x CoreSdk_Initialize(SessionType,
 *     bool remote) refuses anything but CoreSDK here (a client must identify as CoreSDK).
 *   - Integrated mode: the SDKClient connects with an empty ManusHost (ManusHost_Init) without looking
 *     for hosts; LookForHosts finds no host in integrated mode. Remote mode connects to a found host.
 *   - CoreSdk_ConnectToHost before CoreSdk_InitializeCoordinateSystemWithVUH: SDKReturnCode_NoCoordinateSystemSet (16).
 *   - ManusTimestamp is a compressed 64-bit value; only CoreSdk_GetTimestampInfo decodes it into
 *     ManusTimestampInfo {fraction (ms), second, minute, hour, day, month, year, timecode}.
 *   - InitializeCoordinateSystemWithVUH(vuh, p_UseWorldCoordinates): true = world, false = local
 *     (each node relative to its parent, NodeInfo.parentId).
 * FakeManus_SizeOf(i) reports this compiler's struct sizes so the test can compare ctypes with gcc.
 *
 * Build: gcc -shared -fPIC -O1 -DSDK_MAJOR=3 fake_manus.c -o libManusSDK-fake.so -lpthread
 * Environment:
 *   FAKE_MANUS_NODE_ORDER = chain (thumb..pinky, joints in order) | reversed (SDK-2-like: reversed, shuffled ids)
 *   FAKE_MANUS_RATE_HZ    = callback rate (default 120)
 *   FAKE_MANUS_CRASH_ONCE = path: the first time (file absent) segfault, creating the file, at callback
 *                           FAKE_MANUS_CRASH_FRAME (default 30)
 *   FAKE_MANUS_NO_HOSTS   = 1: no host is ever found (remote mode), or the dongle is absent (integrated)
 *   FAKE_MANUS_PUBLISH_TIME = both (default: stream and per-skeleton publishTime set) | stream (only
 *                           SkeletonStreamInfo.publishTime; RawSkeletonInfo.publishTime left 0) | none (both 0).
 *     Both official SDKClients (2.x and 3.x, SDKClient.cpp OnRawSkeletonStreamCallback) overwrite the
 *     per-skeleton field with the stream's: `skeletons[i].info.publishTime = p_RawSkeletonStreamInfo->publishTime;`
 *     so an SDK that leaves the per-skeleton field 0 is a case a client must handle.
 * In the hand root's frame, node (chain c, joint j) of glove side s is at (0.01 c + 0.001 j, 0.002 j, 0.1 s);
 * in world coordinates the hand is rotated by frame * 0.01 rad about z, then about x, and moved.
 */
#include <math.h>
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
typedef struct { uint16_t fraction; uint8_t second, minute, hour, day, month; uint32_t year; bool timecode; } ManusTimestampInfo;
typedef struct { uint32_t gloveId; uint32_t nodesCount; ManusTimestamp publishTime; } RawSkeletonInfo;
typedef struct { ManusTimestamp publishTime; uint32_t skeletonsCount; } SkeletonStreamInfo;
typedef struct { uint32_t nodeId; uint32_t parentId; int32_t chainType; int32_t side; int32_t fingerJointType; } NodeInfo;
typedef struct { uint32_t major, minor, patch; char label[16]; char sha[16]; char tag[16]; } Version;
typedef struct { char hostName[256]; char ipAddress[40]; Version manusCoreVersion; } ManusHost;
typedef struct { int32_t view; int32_t up; int32_t handedness; float unitScale; } CoordinateSystemVUH;
typedef void (*RawSkeletonStreamCallback)(const SkeletonStreamInfo *);

uint32_t FakeManus_SizeOf(int which) {
    switch (which) {
    case 0: return sizeof(SkeletonNode);
    case 1: return sizeof(RawSkeletonInfo);
    case 2: return sizeof(SkeletonStreamInfo);
    case 3: return sizeof(NodeInfo);
    case 4: return sizeof(ManusHost);
    case 5: return sizeof(CoordinateSystemVUH);
    case 6: return sizeof(ManusTimestampInfo);
    default: return 0;
    }
}

#define NODES 25
static const uint32_t GLOVE_IDS[2] = {1001, 2002};
static const int32_t SIDES[2] = {1, 2}; /* left, right */
static NodeInfo infos[2][NODES];
static RawSkeletonStreamCallback callback = NULL;
static int coordinate_system_set = 0, initialized = 0, connected = 0, integrated = 0, world = 0;
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
    for (int g = 0; g < 2; g++) {
        for (int i = 0; i < NODES; i++) {
            int k = reversed ? NODES - 1 - i : i;
            NodeInfo *info = &infos[g][i];
            info->nodeId = reversed ? 100 + (uint32_t)(i * 7 % NODES) : (uint32_t)i;
            info->chainType = chains[k];
            info->side = SIDES[g];
            info->fingerJointType = joints[k];
        }
        for (int i = 0; i < NODES; i++) {  /* parent: the previous joint of the chain, or the hand root */
            NodeInfo *info = &infos[g][i];
            info->parentId = info->nodeId;   /* the root is its own parent here; no other node is */
            int best = -1;
            for (int m = 0; m < NODES; m++) {
                NodeInfo *o = &infos[g][m];
                if (info->chainType == 13) break;
                if (o->chainType == 13 && best < 0) best = m;
                if (o->chainType == info->chainType && o->fingerJointType < info->fingerJointType &&
                    (best < 0 || infos[g][best].chainType == 13 || o->fingerJointType > infos[g][best].fingerJointType))
                    best = m;
            }
            if (best >= 0) info->parentId = infos[g][best].nodeId;
        }
    }
}

static void hand_position(const NodeInfo *info, double p[3]) {
    p[0] = 0.01 * info->chainType + 0.001 * info->fingerJointType;
    p[1] = 0.002 * info->fingerJointType;
    p[2] = 0.1 * info->side;
    if (info->chainType == 13) p[0] = p[1] = p[2] = 0.0;   /* the root is the origin of the hand frame */
}

static const NodeInfo *node_by_id(int g, uint32_t id) {
    for (int m = 0; m < NODES; m++) if (infos[g][m].nodeId == id) return &infos[g][m];
    return NULL;
}

/* The fake's compressed timestamp: milliseconds since 2026-11-23 12:00:00.000 UTC, shifted and tagged. */
static uint64_t compress_ms(uint64_t ms) { return (ms << 8) | 0xA5u; }

static const char *publish_time_mode(void) {
    const char *mode = getenv("FAKE_MANUS_PUBLISH_TIME");
    return mode ? mode : "both";
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
        SkeletonStreamInfo info = {{strcmp(publish_time_mode(), "none") == 0 ? 0 : compress_ms(frame * 25 / 3)}, 2};
        if (callback) callback(&info);
    }
    return NULL;
}

int32_t CoreSdk_RegisterCallbackForRawSkeletonStream(RawSkeletonStreamCallback cb) { callback = cb; return 0; }
int32_t CoreSdk_InitializeCoordinateSystemWithVUH(CoordinateSystemVUH vuh, bool use_world) {
    if (vuh.unitScale <= 0) return 2;
    coordinate_system_set = 1;
    world = use_world;
    return 0;
}
int32_t CoreSdk_GetTimestampInfo(ManusTimestamp stamp, ManusTimestampInfo *info) {
    if (!info) return 14;                                     /* NullPointer */
    if ((stamp.time & 0xFFu) != 0xA5u) return 2;              /* not one of ours */
    uint64_t ms = stamp.time >> 8;
    uint64_t seconds = 12 * 3600 + ms / 1000;
    info->fraction = (uint16_t)(ms % 1000);
    info->second = (uint8_t)(seconds % 60);
    info->minute = (uint8_t)(seconds / 60 % 60);
    info->hour = (uint8_t)(seconds / 3600 % 24);
    info->day = (uint8_t)(23 + seconds / 86400);
    info->month = 11;
    info->year = 2026;
    info->timecode = false;
    return 0;
}
int32_t CoreSdk_LookForHosts(uint32_t wait, bool loopback) { (void)wait; (void)loopback; return initialized ? 0 : 10; }
int32_t CoreSdk_GetNumberOfAvailableHostsFound(uint32_t *count) {
    *count = (getenv("FAKE_MANUS_NO_HOSTS") || integrated) ? 0 : 1;  /* integrated: there is no Core to find */
    return 0;
}
int32_t CoreSdk_GetAvailableHostsFound(ManusHost *hosts, uint32_t count) {
    if (count < 1) return 3;
    memset(&hosts[0], 0, sizeof(ManusHost));
    strcpy(hosts[0].hostName, "fake-core");
    return 0;
}
int32_t CoreSdk_ConnectToHost(ManusHost host) {
    if (!initialized) return 10;                             /* FunctionCalledAtWrongTime */
    if (!coordinate_system_set) return 16;                   /* NoCoordinateSystemSet */
    if (integrated ? (host.hostName[0] != 0 || getenv("FAKE_MANUS_NO_HOSTS"))  /* empty host; dongle present */
                   : strcmp(host.hostName, "fake-core") != 0)
        return 11;                                            /* NotConnected */
    connected = 1;
    running = 1;
    pthread_create(&thread, NULL, run, NULL);
    return 0;
}
int32_t CoreSdk_GetRawSkeletonInfo(uint32_t index, RawSkeletonInfo *info) {
    if (index > 1) return 13;
    info->gloveId = GLOVE_IDS[index];
    info->nodesCount = NODES;
    info->publishTime.time = strcmp(publish_time_mode(), "both") == 0 ? compress_ms(frame * 25 / 3) : 0;
    return 0;
}
int32_t CoreSdk_GetRawSkeletonData(uint32_t index, SkeletonNode *nodes, uint32_t count) {
    if (index > 1 || count != NODES) return 3;
    double a = 0.01 * (double)(frame % 600), ca = cos(a), sa = sin(a), cb = cos(0.5), sb = sin(0.5);
    /* R = Rz(a) Rx(0.5): the hand's orientation in the world, as a quaternion too */
    double R[3][3] = {{ca, -sa * cb, sa * sb}, {sa, ca * cb, -ca * sb}, {0, sb, cb}};
    double qw = cos(a / 2) * cos(0.25), qx = cos(a / 2) * sin(0.25), qy = sin(a / 2) * sin(0.25), qz = sin(a / 2) * cos(0.25);
    for (uint32_t i = 0; i < NODES; i++) {
        NodeInfo *info = &infos[index][i];
        double p[3], q[3] = {0, 0, 0};
        hand_position(info, p);
        nodes[i].id = info->nodeId;
        memset(&nodes[i].transform, 0, sizeof(ManusTransform));
        nodes[i].transform.scale.x = nodes[i].transform.scale.y = nodes[i].transform.scale.z = 1.0f;
        if (world) {   /* world: rotate the hand, put its root at (0.3, 0.2 + 0.0001 frame, 1.0) */
            for (int r = 0; r < 3; r++) q[r] = R[r][0] * p[0] + R[r][1] * p[1] + R[r][2] * p[2];
            nodes[i].transform.position.x = (float)(q[0] + 0.3);
            nodes[i].transform.position.y = (float)(q[1] + 0.2 + 0.0001 * (double)(frame % 1000));
            nodes[i].transform.position.z = (float)(q[2] + 1.0);
            nodes[i].transform.rotation.w = (float)qw; nodes[i].transform.rotation.x = (float)qx;
            nodes[i].transform.rotation.y = (float)qy; nodes[i].transform.rotation.z = (float)qz;
        } else {       /* local: relative to the parent node (identity rotations below the root) */
            const NodeInfo *parent = info->chainType == 13 ? NULL : node_by_id((int)index, info->parentId);
            double pp[3] = {0, 0, 0};
            if (parent) hand_position(parent, pp);
            nodes[i].transform.position.x = (float)(p[0] - pp[0]);
            nodes[i].transform.position.y = (float)(p[1] - pp[1]);
            nodes[i].transform.position.z = (float)(p[2] - pp[2]);
            nodes[i].transform.rotation.w = 1.0f;
            if (!parent) {  /* the root's local transform is its world transform */
                nodes[i].transform.position.x = 0.3f; nodes[i].transform.position.z = 1.0f;
                nodes[i].transform.rotation.w = (float)qw; nodes[i].transform.rotation.x = (float)qx;
                nodes[i].transform.rotation.y = (float)qy; nodes[i].transform.rotation.z = (float)qz;
            }
        }
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
    initialized = connected = coordinate_system_set = integrated = world = 0;
    callback = NULL;
    return 0;
}
#if SDK_MAJOR >= 3
int32_t CoreSdk_InitializeIntegrated(void) { build_topology(); initialized = integrated = 1; return 0; }
int32_t CoreSdk_InitializeCore(void) { build_topology(); initialized = 1; integrated = 0; return 0; }
int32_t CoreSdk_SetSessionType(int32_t session_type) { return session_type == 3 ? 0 : 2; }
#else
int32_t CoreSdk_Initialize(int32_t session_type, bool remote) {
    if (session_type != 3) return 2;                           /* InvalidArgument: not SessionType_CoreSDK */
    build_topology();
    initialized = 1;
    integrated = !remote;
    return 0;
}
#endif
