// Memory bandwidth for the decode bound in NOTES.md: reads (and memcpy) 1 GiB with 1 and 2 threads,
// best of 5. Build and run: gcc -O2 -mavx2 -pthread bench/bw.c -o /tmp/bw && /tmp/bw
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <immintrin.h>
#include <pthread.h>
#define N (1024L*1024*1024)
static char *src, *dst; static int nt;
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static volatile double sums[8];
static void *rd(void *a){long i=(long)a; long chunk=N/nt; __m256i acc=_mm256_setzero_si256(); const __m256i*p=(const __m256i*)(src+i*chunk);
 for(long k=0;k<chunk/32;k+=4){acc=_mm256_add_epi64(acc,_mm256_load_si256(p+k));acc=_mm256_add_epi64(acc,_mm256_load_si256(p+k+1));acc=_mm256_add_epi64(acc,_mm256_load_si256(p+k+2));acc=_mm256_add_epi64(acc,_mm256_load_si256(p+k+3));}
 sums[i]=(double)(_mm256_extract_epi64(acc,0)+_mm256_extract_epi64(acc,1)+_mm256_extract_epi64(acc,2)+_mm256_extract_epi64(acc,3)); return 0;}
static void *cp(void *a){long i=(long)a; long chunk=N/nt; memcpy(dst+i*chunk,src+i*chunk,chunk); return 0;}
int main(){ src=aligned_alloc(64,N); dst=aligned_alloc(64,N); memset(src,1,N); memset(dst,2,N);
 for(nt=1;nt<=2;nt++){ double bestr=0,bestc=0; for(int rep=0;rep<5;rep++){ pthread_t th[8];
  double t0=now(); for(long i=0;i<nt;i++)pthread_create(&th[i],0,rd,(void*)i); for(int i=0;i<nt;i++)pthread_join(th[i],0); double r=N/(now()-t0)/1e9; if(r>bestr)bestr=r;
  t0=now(); for(long i=0;i<nt;i++)pthread_create(&th[i],0,cp,(void*)i); for(int i=0;i<nt;i++)pthread_join(th[i],0); double c=N/(now()-t0)/1e9; if(c>bestc)bestc=c; }
  printf("%d threads: read %.1f GB/s, memcpy %.1f GB/s (bytes copied per second; %.1f GB/s read+write)\n",nt,bestr,bestc,2*bestc);}
 return 0;}
